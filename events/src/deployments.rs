//! Azure deployments: which model each deployment of an Azure provider
//! serves, and what a name a caller uses means at a provider.
//!
//! Invariants:
//! - An Azure provider is called by deployment only: every name it resolves
//!   to is one of its deployments (sent in the URL, or as `model` on the v1
//!   API), and it takes no name it does not list.
//! - A deployment's model is known only when an admin said it. A provider
//!   stored before `deployments` existed (one `deployment` setting, and the
//!   preset's models, which it never really served) serves that deployment
//!   under its own name, model unknown: unpriced and flagged, never billed
//!   at some other model's price.
//! - A model name reaches a deployment only when exactly one deployment of
//!   the provider serves it; when several do, the name is ambiguous and
//!   refused ([`Lookup::Ambiguous`]), never guessed.
//! - An Azure provider's prices are keyed by deployment ([`deployment_prices`]),
//!   so a price always belongs to exactly one deployment.

use std::collections::BTreeMap;

use crate::pricing::Price;
use crate::provider::{ProviderKind, ProviderSpec};

/// Each deployment of an Azure provider and the model it serves (`None`:
/// not said).
pub type Deployments = BTreeMap<String, Option<String>>;

/// What a name a caller used is at one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// The id to call the provider with: the model id, or for Azure the
    /// deployment (named directly, or serving the model named).
    Serves(&'a str),
    /// Several deployments serve the model named: the caller must name one.
    Ambiguous(Vec<&'a str>),
    /// The provider does not list the name.
    NotServed,
}

impl ProviderSpec {
    /// Whether this provider is called by deployment (Azure).
    pub fn by_deployment(&self) -> bool {
        self.kind == ProviderKind::Azure
    }

    /// Whether this provider's models and prices come from `deployments`,
    /// rather than from the shape stored before it existed.
    fn has_deployment_map(&self) -> bool {
        self.by_deployment() && !self.deployments.is_empty()
    }

    /// The deployments of an Azure provider and the model each serves, by
    /// name (empty for other kinds). A provider stored before `deployments`
    /// existed has its one `deployment` setting, model unknown (or, without
    /// one, each listed model as a deployment of unknown model).
    pub fn deployment_models(&self) -> Vec<(&str, Option<&str>)> {
        if !self.by_deployment() {
            return Vec::new();
        }
        if self.has_deployment_map() {
            return self
                .deployments
                .iter()
                .map(|(d, m)| (d.as_str(), m.as_deref()))
                .collect();
        }
        match self.setting("deployment") {
            Some(d) => vec![(d, None)],
            None => {
                let mut names: Vec<&str> = self.models.iter().map(String::as_str).collect();
                names.sort_unstable();
                names.dedup();
                names.into_iter().map(|d| (d, None)).collect()
            }
        }
    }

    /// The ids this provider is called with: its model ids, or for Azure
    /// its deployment names.
    pub fn served(&self) -> Vec<&str> {
        if self.by_deployment() {
            self.deployment_models()
                .into_iter()
                .map(|(d, _)| d)
                .collect()
        } else {
            self.models.iter().map(String::as_str).collect()
        }
    }

    /// The model behind an id this provider is called with (what the
    /// catalog's limits and prices are looked up by): the id itself, or for
    /// an Azure deployment the model it serves (`None`: not said, or not a
    /// deployment of this provider).
    pub fn served_model<'a>(&'a self, id: &'a str) -> Option<&'a str> {
        if !self.by_deployment() {
            return Some(id);
        }
        self.deployment_models()
            .into_iter()
            .find(|(d, _)| *d == id)
            .and_then(|(_, m)| m)
    }

    /// What `name` is at this provider: a model id it lists, or for Azure
    /// a deployment name (first), else a model that exactly one deployment
    /// serves.
    pub fn lookup<'a>(&'a self, name: &str) -> Lookup<'a> {
        if !self.by_deployment() {
            return match self.models.iter().find(|m| *m == name) {
                Some(m) => Lookup::Serves(m),
                None => Lookup::NotServed,
            };
        }
        let deployments = self.deployment_models();
        if let Some((d, _)) = deployments.iter().find(|(d, _)| *d == name) {
            return Lookup::Serves(d);
        }
        let serving: Vec<&str> = deployments
            .iter()
            .filter(|(_, m)| *m == Some(name))
            .map(|(d, _)| *d)
            .collect();
        match serving.as_slice() {
            [] => Lookup::NotServed,
            [one] => Lookup::Serves(one),
            _ => Lookup::Ambiguous(serving),
        }
    }

    /// Whether a name this provider does not list may still be sent to it
    /// (pinned, or as `provider/model`): any model id for most kinds, never
    /// for Azure, whose only names are its deployments.
    pub fn takes_unlisted(&self) -> bool {
        !self.by_deployment()
    }

    /// The names callers may use for this provider: the ids it is called
    /// with, plus for Azure each model exactly one deployment serves.
    pub fn caller_names(&self) -> Vec<&str> {
        let mut names = self.served();
        for model in self.deployment_models().into_iter().filter_map(|(_, m)| m) {
            if !names.contains(&model) && matches!(self.lookup(model), Lookup::Serves(_)) {
                names.push(model);
            }
        }
        names
    }

    /// Models this provider serves from more than one deployment (and that
    /// are not a deployment's name): names it refuses as ambiguous.
    pub fn ambiguous_models(&self) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .deployment_models()
            .into_iter()
            .filter_map(|(_, m)| m)
            .filter(|m| matches!(self.lookup(m), Lookup::Ambiguous(_)))
            .collect();
        models.sort_unstable();
        models.dedup();
        models
    }

    /// This spec in today's shape: an Azure provider stored before
    /// `deployments` existed gets its one deployment (model unknown) as
    /// `deployments` and `models`, and loses the preset's prices it never
    /// really had. Anything else is returned unchanged. Written back only
    /// as a new event (an admin's next change), never in place.
    pub fn with_deployment_map(mut self) -> Self {
        if !self.by_deployment() || self.has_deployment_map() {
            return self;
        }
        let deployments: Deployments = self
            .deployment_models()
            .into_iter()
            .map(|(d, _)| (d.to_string(), None))
            .collect();
        self.models = deployments.keys().cloned().collect();
        self.deployments = deployments;
        self.settings.remove("deployment");
        self.prices.clear();
        self
    }
}

/// The prices of an Azure provider's deployments, keyed by deployment. Each
/// deployment gets, in order: the price `given` for its name; the price
/// `given` for the model it serves; the price it had `before` (if it
/// served the same model then); the `catalog`'s price of its model. A
/// deployment whose model is not said is priced only by name.
pub fn deployment_prices(
    deployments: &Deployments,
    given: &BTreeMap<String, Price>,
    before: Option<(&Deployments, &BTreeMap<String, Price>)>,
    catalog: impl Fn(&str) -> Option<Price>,
) -> BTreeMap<String, Price> {
    deployments
        .iter()
        .filter_map(|(deployment, model)| {
            let model = model.as_deref();
            let kept = before.and_then(|(old, prices)| {
                (old.get(deployment).map(Option::as_deref) == Some(model))
                    .then(|| prices.get(deployment).copied())
                    .flatten()
            });
            given
                .get(deployment)
                .copied()
                .or_else(|| model.and_then(|m| given.get(m).copied()))
                .or(kept)
                .or_else(|| model.and_then(&catalog))
                .map(|price| (deployment.clone(), price))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azure(deployments: &[(&str, Option<&str>)]) -> ProviderSpec {
        let deployments: Deployments = deployments
            .iter()
            .map(|(d, m)| (d.to_string(), m.map(str::to_string)))
            .collect();
        ProviderSpec {
            name: "az".into(),
            kind: ProviderKind::Azure,
            base_url: "https://res.openai.azure.com".into(),
            models: deployments.keys().cloned().collect(),
            deployments,
            ..ProviderSpec::default()
        }
    }

    /// As an aigw before `deployments` stored it: the preset's models and
    /// prices, and one `deployment` setting.
    fn legacy() -> ProviderSpec {
        ProviderSpec {
            name: "az".into(),
            kind: ProviderKind::Azure,
            base_url: "https://res.openai.azure.com".into(),
            models: vec!["gpt-5.4".into(), "gpt-5.4-mini".into()],
            prices: [
                ("gpt-5.4".to_string(), Price::tokens(2_500_000, 15_000_000)),
                (
                    "gpt-5.4-mini".to_string(),
                    Price::tokens(750_000, 4_500_000),
                ),
            ]
            .into(),
            settings: [
                ("deployment".to_string(), "gpt-5.4".to_string()),
                ("api_version".to_string(), "2024-10-21".to_string()),
            ]
            .into(),
            preset: Some("azure".into()),
            ..ProviderSpec::default()
        }
    }

    #[test]
    fn a_deployment_is_reached_by_its_name_or_by_its_model_when_unambiguous() {
        let spec = azure(&[
            ("mini", Some("gpt-4o-mini")),
            ("prod-5", Some("gpt-5.4")),
            ("raw", None),
        ]);
        assert_eq!(spec.served(), ["mini", "prod-5", "raw"]);
        assert_eq!(spec.lookup("prod-5"), Lookup::Serves("prod-5"));
        assert_eq!(spec.lookup("gpt-5.4"), Lookup::Serves("prod-5"));
        assert_eq!(spec.lookup("gpt-4o-mini"), Lookup::Serves("mini"));
        assert_eq!(spec.lookup("raw"), Lookup::Serves("raw"));
        assert_eq!(spec.lookup("gpt-5.4-mini"), Lookup::NotServed);
        assert_eq!(spec.served_model("prod-5"), Some("gpt-5.4"));
        assert_eq!(spec.served_model("raw"), None);
        assert_eq!(
            spec.served_model("gpt-5.4"),
            None,
            "a model is no deployment"
        );
        assert!(!spec.takes_unlisted());
        assert_eq!(
            spec.caller_names(),
            ["mini", "prod-5", "raw", "gpt-4o-mini", "gpt-5.4"]
        );
        assert!(spec.ambiguous_models().is_empty());
    }

    #[test]
    fn a_model_two_deployments_serve_is_ambiguous_unless_a_deployment_has_its_name() {
        let spec = azure(&[("east", Some("gpt-5.4")), ("west", Some("gpt-5.4"))]);
        assert_eq!(
            spec.lookup("gpt-5.4"),
            Lookup::Ambiguous(vec!["east", "west"])
        );
        assert_eq!(spec.lookup("west"), Lookup::Serves("west"));
        assert_eq!(spec.caller_names(), ["east", "west"]);
        assert_eq!(spec.ambiguous_models(), ["gpt-5.4"]);
        // A deployment named like the model is that name's deployment.
        let named = azure(&[("gpt-5.4", Some("gpt-5.4")), ("ptu", Some("gpt-5.4"))]);
        assert_eq!(named.lookup("gpt-5.4"), Lookup::Serves("gpt-5.4"));
        assert!(named.ambiguous_models().is_empty());
    }

    #[test]
    fn a_provider_stored_before_deployments_serves_its_deployment_unpriced() {
        let spec = legacy();
        assert_eq!(spec.deployment_models(), [("gpt-5.4", None)]);
        assert_eq!(spec.served(), ["gpt-5.4"]);
        // Named like a catalog model, yet its model was never said.
        assert_eq!(spec.served_model("gpt-5.4"), None);
        assert_eq!(spec.price("gpt-5.4"), None);
        assert_eq!(spec.lookup("gpt-5.4-mini"), Lookup::NotServed);
        let mut other = legacy();
        other.settings.insert("deployment".into(), "my-dep".into());
        assert_eq!(other.served(), ["my-dep"]);
        assert_eq!(other.lookup("gpt-5.4"), Lookup::NotServed);
        assert_eq!(other.price("my-dep"), None);

        let migrated = legacy().with_deployment_map();
        assert_eq!(
            migrated.deployments,
            Deployments::from([("gpt-5.4".to_string(), None)])
        );
        assert_eq!(migrated.models, ["gpt-5.4"]);
        assert!(migrated.prices.is_empty());
        assert_eq!(migrated.setting("deployment"), None);
        assert_eq!(migrated.setting("api_version"), Some("2024-10-21"));
        assert_eq!(migrated.served(), spec.served());
        // Today's shape is left alone.
        let current = azure(&[("a", Some("m"))]);
        assert_eq!(current.clone().with_deployment_map(), current);
    }

    #[test]
    fn other_kinds_serve_their_models_and_take_unlisted_ones_when_pinned() {
        let spec = ProviderSpec {
            kind: ProviderKind::OpenaiCompatible,
            models: vec!["m1".into(), "m2".into()],
            prices: [("m1".to_string(), Price::tokens(1, 2))].into(),
            ..ProviderSpec::default()
        };
        assert_eq!(spec.served(), ["m1", "m2"]);
        assert_eq!(spec.lookup("m2"), Lookup::Serves("m2"));
        assert_eq!(spec.lookup("m3"), Lookup::NotServed);
        assert_eq!(spec.served_model("anything"), Some("anything"));
        assert!(spec.takes_unlisted());
        assert!(spec.deployment_models().is_empty());
        assert_eq!(spec.price("m1"), Some(&Price::tokens(1, 2)));
        assert_eq!(spec.clone().with_deployment_map(), spec);
    }

    #[test]
    fn prices_follow_each_deployments_model_unless_given_by_name() {
        let catalog = |m: &str| (m == "gpt-5.4").then(|| Price::tokens(2_500_000, 15_000_000));
        let deployments: Deployments = [
            ("prod-5".to_string(), Some("gpt-5.4".to_string())),
            ("cheap-5".to_string(), Some("gpt-5.4".to_string())),
            ("mini".to_string(), Some("gpt-4o-mini".to_string())),
            ("raw".to_string(), None),
            ("raw-priced".to_string(), None),
        ]
        .into();
        let given: BTreeMap<String, Price> = [
            ("cheap-5".to_string(), Price::tokens(1, 1)),
            ("gpt-4o-mini".to_string(), Price::tokens(150_000, 600_000)),
            ("raw-priced".to_string(), Price::tokens(7, 7)),
        ]
        .into();
        let prices = deployment_prices(&deployments, &given, None, catalog);
        assert_eq!(
            prices,
            BTreeMap::from([
                ("cheap-5".to_string(), Price::tokens(1, 1)),
                ("mini".to_string(), Price::tokens(150_000, 600_000)),
                ("prod-5".to_string(), Price::tokens(2_500_000, 15_000_000)),
                ("raw-priced".to_string(), Price::tokens(7, 7)),
            ])
        );
        // A later change keeps a deployment's price while it serves the
        // same model, and drops it when the model changes.
        let changed: Deployments = [
            ("cheap-5".to_string(), Some("gpt-5.4".to_string())),
            ("raw-priced".to_string(), Some("gpt-9".to_string())),
        ]
        .into();
        let again = deployment_prices(
            &changed,
            &BTreeMap::new(),
            Some((&deployments, &prices)),
            catalog,
        );
        assert_eq!(
            again,
            BTreeMap::from([("cheap-5".to_string(), Price::tokens(1, 1))])
        );
    }
}
