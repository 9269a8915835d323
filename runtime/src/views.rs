//! Rows of the projector's views that other roles read: the ingress's
//! admin API and the CLI read them here, so they need not link the
//! projector. The projector alone writes these tables.

pub mod alerts;
pub mod quarantine;
