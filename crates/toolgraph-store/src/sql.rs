//! Multi-row statements: one statement for many rows, so a batch of thousands of calls is a
//! handful of round trips on either database.

use sqlx::any::{Any, AnyArguments};
use sqlx::query::Query;
use sqlx::{AnyConnection, Arguments, AssertSqlSafe};

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
    OptReal(Option<f64>),
}

impl Param {
    fn sql_type(&self) -> &'static str {
        match self {
            Param::Text(_) | Param::OptText(_) => "TEXT",
            Param::Int(_) | Param::OptInt(_) => "BIGINT",
            Param::Real(_) | Param::OptReal(_) => "DOUBLE PRECISION",
        }
    }

    fn is_null(&self) -> bool {
        matches!(
            self,
            Param::OptText(None) | Param::OptInt(None) | Param::OptReal(None)
        )
    }

    /// Appends the value to `text` — a typed placeholder bound in `args` (so PostgreSQL
    /// knows its type inside `VALUES` and SQLite accepts it too), or a typed `NULL` literal
    /// (the any-driver's NULL parameters are refused by PostgreSQL in binary format).
    fn push(
        &self,
        text: &mut String,
        n: &mut usize,
        args: &mut AnyArguments,
    ) -> Result<(), sqlx::Error> {
        let ty = self.sql_type();
        if self.is_null() {
            text.push_str(&format!("CAST(NULL AS {ty})"));
            return Ok(());
        }
        *n += 1;
        text.push_str(&format!("CAST(${n} AS {ty})"));
        self.clone().add(args)
    }

    fn add(self, args: &mut AnyArguments) -> Result<(), sqlx::Error> {
        let r = match self {
            Param::Text(v) => args.add(v),
            Param::OptText(v) => args.add(v),
            Param::Int(v) => args.add(v),
            Param::OptInt(v) => args.add(v),
            Param::Real(v) => args.add(v),
            Param::OptReal(v) => args.add(v),
        };
        r.map_err(sqlx::Error::Encode)
    }
}

/// Parameters per statement. SQLite binds `$n` parameters by name with a linear search,
/// so large statements cost quadratically there; PostgreSQL prefers fewer round trips.
fn chunk_rows(conn: &AnyConnection, width: usize) -> usize {
    let params = if conn.backend_name().eq_ignore_ascii_case("sqlite") {
        250
    } else {
        8000
    };
    (params / width.max(1)).max(1)
}

/// `(...), (...)` text for `rows`, each row followed by `extra` literal columns, with the
/// arguments appended to `args`, whose `n` parameters come first.
fn values(
    rows: &[Vec<Param>],
    extra: &str,
    mut n: usize,
    mut args: AnyArguments,
) -> Result<(String, AnyArguments), sqlx::Error> {
    let mut text = String::new();
    for (r, row) in rows.iter().enumerate() {
        text.push_str(if r == 0 { "(" } else { ", (" });
        for (c, p) in row.iter().enumerate() {
            if c > 0 {
                text.push_str(", ");
            }
            p.push(&mut text, &mut n, &mut args)?;
        }
        if !extra.is_empty() {
            text.push_str(", ");
            text.push_str(extra);
        }
        text.push(')');
    }
    Ok((text, args))
}

/// Runs `head VALUES ... tail` for `rows`, in chunks.
pub(crate) async fn insert_rows(
    conn: &mut AnyConnection,
    head: &str,
    rows: &[Vec<Param>],
    extra: &str,
    tail: &str,
) -> Result<(), sqlx::Error> {
    let width = rows.first().map_or(1, Vec::len);
    for chunk in rows.chunks(chunk_rows(conn, width)) {
        let (vals, args) = values(chunk, extra, 0, AnyArguments::default())?;
        let sql = format!("{head}{vals}{tail}");
        let q: Query<'_, Any, AnyArguments> = sqlx::query_with(AssertSqlSafe(sql), args);
        q.execute(&mut *conn).await?;
    }
    Ok(())
}
