//! The projector's position in the event history: where its views are up
//! to (`projector_checkpoints`). The projector moves it in the transaction
//! that writes what it applied; the audit reads it, so it counts only what
//! the views could already hold.

use sqlx::PgConnection;

/// The checkpoint of the live views.
pub const VIEWS: &str = "views";

/// A position in the event history, `(txid, pos)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub txid: String,
    pub pos: i64,
}

impl Position {
    pub fn start() -> Self {
        Self {
            txid: "0".into(),
            pos: 0,
        }
    }
}

/// The checkpoint `name` (the start of history when there is none).
pub async fn checkpoint(conn: &mut PgConnection, name: &str) -> Result<Position, sqlx::Error> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT txid::text, pos FROM projector_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map_or_else(Position::start, |(txid, pos)| Position { txid, pos }))
}

pub async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    at: &Position,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO projector_checkpoints (name, txid, pos) VALUES ($1, $2::text::xid8, $3)
         ON CONFLICT (name) DO UPDATE SET txid = EXCLUDED.txid, pos = EXCLUDED.pos",
    )
    .bind(name)
    .bind(&at.txid)
    .bind(at.pos)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
