//! Opening a [`Store`]: parsing its URL, one first connection (within
//! [`StoreOptions::connect_timeout_ms`]) whose own error is the one reported — a refused
//! port, a file that is not a database, a wrong password — then the pool and the
//! migrations. Opening to record creates a missing SQLite file and its directory; opening
//! an existing store (for commands that only read) creates nothing — no file, no
//! directory, no table — and finds none where the file or toolgraph's tables are missing.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Executor};

use crate::database::{Backend, Store};
use crate::{StoreError, StoreOptions};

/// Statements every SQLite connection runs first: wait for a lock rather than fail at
/// once (several processes may share the file), and keep foreign keys.
const SQLITE_SETUP: [&str; 3] = [
    "PRAGMA busy_timeout = 10000",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
];

impl Store {
    /// Opens (and for SQLite creates) the store at `url`, applying migrations, with
    /// default [`StoreOptions`].
    ///
    /// `sqlite://toolgraph.db` is a file relative to the current directory;
    /// `postgres://user@host/db` a server.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        Store::open_with(url, StoreOptions::default()).await
    }

    /// [`open`](Store::open) with `options`: how long to wait for the first connection,
    /// and how the store's writes wait, retry and give up. A SQLite file that does not
    /// exist is created, with its directory.
    pub async fn open_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        let store = Store::open_inner(url, options, true).await?;
        // Opening to create always yields a store; say so rather than unwrap.
        store.ok_or_else(|| StoreError::Open {
            step: "creating",
            url: hide_password(url),
            cause: "the store was not created".into(),
        })
    }

    /// The store at `url` if it exists — a SQLite file, or a PostgreSQL database, holding
    /// toolgraph's tables — with pending migrations applied; `None` when it does not, and
    /// then nothing was created (the SQLite file is opened `mode=rw`, never `rwc`).
    pub async fn open_existing_with(
        url: &str,
        options: StoreOptions,
    ) -> Result<Option<Store>, StoreError> {
        Store::open_inner(url, options, false).await
    }

    async fn open_inner(
        url: &str,
        options: StoreOptions,
        create: bool,
    ) -> Result<Option<Store>, StoreError> {
        install_default_drivers();
        let shown: Arc<str> = hide_password(url).into();
        let failed = |step: &'static str, cause: String| StoreError::Open {
            step,
            url: shown.to_string(),
            cause,
        };
        let (backend, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut url = format!("sqlite:{rest}");
            let file = sqlite_file(&url);
            if create {
                if let Some(dir) = file.as_deref().and_then(Path::parent)
                    && !dir.as_os_str().is_empty()
                    && !dir.exists()
                {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        failed(
                            "creating the directory of",
                            format!("{}: {e}", dir.display()),
                        )
                    })?;
                }
            } else if !file.as_deref().is_some_and(Path::exists) {
                // No file (or an in-memory database): nothing was ever recorded there.
                return Ok(None);
            }
            if !url.contains("mode=") {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(if create { "mode=rwc" } else { "mode=rw" });
            }
            (Backend::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else {
            return Err(StoreError::Url(url.to_owned()));
        };
        // One connection by itself first: its own error is the one worth reporting.
        let limit = options.connect_timeout();
        match tokio::time::timeout(limit, first_connection(&url, backend)).await {
            Ok(Ok(has_schema)) => {
                if !create && !has_schema {
                    return Ok(None);
                }
            }
            Ok(Err((step, e))) => return Err(failed(step, e.to_string())),
            Err(_) => {
                return Err(failed(
                    "connecting to",
                    format!("no answer within {} ms", options.connect_timeout_ms),
                ));
            }
        }
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 8,
            })
            .acquire_timeout(limit.max(options.write_timeout()));
        if backend == Backend::Sqlite {
            pool_options = pool_options.after_connect(|conn, _| {
                Box::pin(async move {
                    for statement in SQLITE_SETUP {
                        conn.execute(statement).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect(&url)
            .await
            .map_err(|e| failed("connecting to", e.to_string()))?;
        // A new SQLite file opened by several processes at once races on switching to WAL
        // and on migrating (SQLite has no migration lock); the loser's step fails or rolls
        // back, and on retry finds the work done.
        let mut attempt = 0u64;
        loop {
            match Store::migrate(&pool, backend).await {
                Ok(()) => break,
                Err(_) if backend == Backend::Sqlite && attempt < 20 => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                }
                Err(e) => return Err(failed("migrating the schema of", e.to_string())),
            }
        }
        Ok(Some(Store::from_parts(pool, backend, shown, options)))
    }

    async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
        match backend {
            Backend::Sqlite => {
                pool.execute("PRAGMA journal_mode = WAL").await?;
                sqlx::migrate!("./migrations/sqlite").run(pool).await?;
            }
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }
}

/// Whether toolgraph's schema is there: one row, `n` > 0 when it is. Reading the
/// catalogue also fails at once on a file that is not a SQLite database.
fn schema_probe(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'executions'"
        }
        Backend::Postgres => {
            "SELECT CAST(CASE WHEN to_regclass('executions') IS NULL THEN 0 ELSE 1 END AS BIGINT) AS n"
        }
    }
}

/// Opens one connection to `url` and reads from it, then closes it: whether toolgraph's
/// schema is there; on failure, what failed (`connecting to`, `reading`) and the
/// database's error.
async fn first_connection(
    url: &str,
    backend: Backend,
) -> Result<bool, (&'static str, sqlx::Error)> {
    let mut conn = AnyConnection::connect(url)
        .await
        .map_err(|e| ("connecting to", e))?;
    if backend == Backend::Sqlite {
        conn.execute(SQLITE_SETUP[0])
            .await
            .map_err(|e| ("reading", e))?;
    }
    let row = sqlx::query(schema_probe(backend))
        .fetch_one(&mut conn)
        .await
        .map_err(|e| ("reading", e))?;
    let n: i64 = sqlx::Row::try_get(&row, "n").map_err(|e| ("reading", e))?;
    let _ = conn.close().await;
    Ok(n > 0)
}

/// The file a `sqlite:` URL names, as sqlx reads it (percent-decoded, before `?`); `None`
/// for an in-memory database.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    if url.contains("mode=memory") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    let name = file.to_string_lossy();
    if name.is_empty() || name.starts_with("file:sqlx-in-memory-") {
        return None;
    }
    Some(file.to_path_buf())
}

/// `url` with the password of its user part, if any, replaced by `***`: how a store's URL
/// appears in messages.
pub fn hide_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match user_info.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::hide_password;

    #[test]
    fn a_password_in_a_url_is_hidden_and_the_rest_kept() {
        assert_eq!(
            hide_password("postgres://tg:s3cret@db.test:5432/tg?sslmode=require"),
            "postgres://tg:***@db.test:5432/tg?sslmode=require"
        );
        assert_eq!(
            hide_password("postgres://tg@db.test/tg"),
            "postgres://tg@db.test/tg"
        );
        assert_eq!(
            hide_password("sqlite://toolgraph.db"),
            "sqlite://toolgraph.db"
        );
        assert_eq!(hide_password("sqlite:x.db"), "sqlite:x.db");
    }
}
