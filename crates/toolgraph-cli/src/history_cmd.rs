//! `toolgraph history`, `show`, `stats` and `prune`: reading the store (and pruning it).
//!
//! These commands never create a store: where none exists yet they say that nothing is
//! recorded, naming the store. An execution is named by its id or a unique prefix of it
//! ([`resolve`], shared with `resume`); `history` shows each id as the shortest prefix of at
//! least [`SHOWN_ID`] characters that names it alone, so what it shows can be pasted back.
//! They exit 0 when they did what was asked — `show` of a failed execution too — and 2 when
//! they could not (an unknown or ambiguous id, bad flags, a store that cannot be opened).

use anyhow::{Context, Result, anyhow};
use clap::Args;
use toolgraph_store::{ExecutionStore, ExecutionSummary, PruneRequest, StoreError};

use crate::Outcome;
use crate::input::StoreFlags;
use crate::out::{errln, outln};
use crate::run_cmd::{print_result, write_timeline};

/// The fewest characters of an id `history` shows.
pub const SHOWN_ID: usize = 8;

/// Lines a list in a human message shows at most (`--json` gives them all).
const LISTED: usize = 20;

/// "Nothing recorded yet" for a store that does not exist.
pub fn nothing_yet(store: &str) -> String {
    if store.starts_with("memory:") {
        return format!(
            "nothing recorded in {store}: a memory store lives only while one command runs"
        );
    }
    format!("nothing recorded yet: {store} does not exist (`toolgraph run` creates it)")
}

/// How long a lease lives without a heartbeat, as `history` and `prune` judge it.
fn lease_timeout_ms() -> i64 {
    i64::try_from(toolgraph::LEASE_TIMEOUT.as_millis()).unwrap_or(i64::MAX)
}

/// Its status as a user should read it: a `running` execution that nobody runs is
/// `interrupted` (`resume` finishes it).
fn status(s: &ExecutionSummary, now: i64) -> &str {
    if s.is_abandoned(now, lease_timeout_ms()) {
        "interrupted"
    } else {
        s.status.as_str()
    }
}

/// Epoch ms as `2026-11-02 10:15:03` (UTC).
pub fn when(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_owned()
}

/// The execution `given` names in `store` — its id or a unique prefix — or an error saying
/// why not, naming the store; an ambiguous prefix lists the candidates.
pub async fn resolve(store: &dyn ExecutionStore, given: &str) -> Result<ExecutionSummary> {
    match store.resolve_id(given).await {
        Ok(found) => Ok(found),
        Err(StoreError::Ambiguous {
            prefix,
            store,
            candidates,
            more,
        }) => {
            let now = toolgraph_store::now_ms();
            let mut text = format!(
                "{prefix} is ambiguous in the store {store}: {} executions' ids start so; give more of the id:",
                if more {
                    format!("more than {}", candidates.len())
                } else {
                    candidates.len().to_string()
                }
            );
            for c in &candidates {
                text.push_str(&format!(
                    "\n  {}  {}  {}",
                    c.id,
                    when(c.created_at),
                    status(c, now)
                ));
            }
            if more {
                text.push_str("\n  …");
            }
            Err(anyhow!(text))
        }
        Err(e) => Err(e.into()),
    }
}

/// The shortest prefix of `id`, at least [`SHOWN_ID`] characters, that no other id of its
/// kind (`ids`) in `store` starts with.
pub async fn shown_id(store: &dyn ExecutionStore, ids: IdKind, id: &str) -> Result<String> {
    let mut len = SHOWN_ID.min(id.len());
    while len < id.len() {
        let prefix = &id[..len];
        let sharing = match ids {
            IdKind::Execution => store.executions_by_prefix(prefix, 2).await?.len(),
            IdKind::Session => store.sessions_by_prefix(prefix, 2).await?.len(),
        };
        if sharing <= 1 {
            break;
        }
        len += 1;
    }
    Ok(id[..len].to_owned())
}

/// Which ids a shown prefix must tell apart.
#[derive(Clone, Copy)]
pub enum IdKind {
    /// Executions' ids.
    Execution,
    /// Chat sessions' ids.
    Session,
}

#[derive(Args)]
pub struct HistoryArgs {
    /// How many executions, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn history(args: HistoryArgs) -> Result<Outcome> {
    let (store, name) = args.store.existing_store().await?;
    let rows = match &store {
        Some(store) => store.history(args.limit).await?,
        None => Vec::new(),
    };
    if args.store.json {
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        if store.is_none() {
            errln!("toolgraph: {}", nothing_yet(&name));
        }
        return Ok(Outcome::Success);
    }
    let Some(store) = store else {
        outln!("{}", nothing_yet(&name))?;
        return Ok(Outcome::Success);
    };
    if rows.is_empty() {
        outln!("nothing recorded yet in {name}")?;
        return Ok(Outcome::Success);
    }
    let mut ids = Vec::with_capacity(rows.len());
    for r in &rows {
        ids.push(shown_id(&*store, IdKind::Execution, &r.id).await?);
    }
    let width = ids.iter().map(String::len).max().unwrap_or(SHOWN_ID);
    outln!(
        "{:<width$}  {:<19}  {:<11}  {:>6}  {:>7}  {:>11}  {:>8}",
        "id",
        "created (UTC)",
        "status",
        "calls",
        "success",
        "makespan",
        "speedup"
    )?;
    let now = toolgraph_store::now_ms();
    for (r, id) in rows.iter().zip(&ids) {
        outln!(
            "{:<width$}  {:<19}  {:<11}  {:>6}  {:>7}  {:>11}  {:>8}",
            id,
            when(r.created_at),
            status(r, now),
            r.calls,
            r.success.map_or("-", |s| if s { "yes" } else { "no" }),
            r.makespan_ms
                .map_or_else(|| "-".into(), |m| format!("{m:.1} ms")),
            r.speedup.map_or_else(|| "-".into(), |s| format!("{s:.2}×")),
        )?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct ShowArgs {
    /// The execution or chat session: its id, or a prefix of it no other id starts with
    /// (at least 4 characters; `history` and `sessions` show one).
    pub id: String,
    /// Draw it into this file (`.svg` or `.html`).
    #[arg(long, value_name = "FILE.svg", value_parser = crate::timeline::output_path)]
    pub timeline: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn show(args: ShowArgs) -> Result<Outcome> {
    let (store, name) = args.store.existing_store().await?;
    let Some(store) = store else {
        return Err(anyhow!("no execution {}: {}", args.id, nothing_yet(&name)));
    };
    // Execution and session ids look alike: the id is looked up as both.
    let execution = store.resolve_id(&args.id).await;
    let session = store.resolve_session(&args.id).await;
    let found = match (execution, session) {
        (Ok(e), Ok(s)) => {
            return Err(anyhow!(
                "{} names both execution {} and session {} in the store {name}; give more of the id",
                args.id,
                e.id,
                s.id
            ));
        }
        (Err(StoreError::NotFound { .. }), Ok(s)) => {
            if args.timeline.is_some() {
                return Err(anyhow!(
                    "{} is a chat session: --timeline draws one execution (`toolgraph show` of the session lists them)",
                    s.id
                ));
            }
            return crate::sessions_cmd::show_session(&*store, &s.id, args.store.json).await;
        }
        (
            Err(StoreError::NotFound { .. }),
            Err(StoreError::NotFound { .. } | StoreError::SessionNotFound { .. }),
        ) => {
            return Err(anyhow!(
                "no execution {} in the store {name}, nor a session",
                args.id
            ));
        }
        // An ambiguous session prefix, with its candidates.
        (Err(StoreError::NotFound { .. }), Err(e)) => {
            return Err(crate::sessions_cmd::session_error(e));
        }
        (Ok(e), _) => e,
        // Ambiguous, or not an id at all: said as `resolve` says it.
        (Err(_), _) => resolve(&*store, &args.id).await?,
    };
    let stored = store.load(&found.id).await?;
    if !args.store.json {
        let s = &stored.summary;
        let status = match &s.owner {
            _ if s.is_abandoned(toolgraph_store::now_ms(), lease_timeout_ms()) => {
                "interrupted (nobody runs it: `toolgraph resume` finishes it)".to_owned()
            }
            Some(owner) if s.status == "running" => format!("running in {owner}"),
            _ => s.status.clone(),
        };
        outln!(
            "execution {} · {} · resumed {} time(s)",
            s.id,
            status,
            s.resumed
        )?;
    }
    print_result(&stored.result, args.store.json)?;
    if let Some(path) = &args.timeline {
        let edges: Vec<(usize, usize)> = stored.edges.iter().map(|(f, t, _)| (*f, *t)).collect();
        write_timeline(path, &stored.result, &edges, &stored.critical)?;
    }
    // It showed what was asked, whatever the execution's calls did.
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct StatsArgs {
    /// Only executions created within this long (e.g. `1h`, `7d`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    /// Only this tool.
    #[arg(long, value_name = "NAME")]
    pub tool: Option<String>,
    #[command(flatten)]
    pub store: StoreFlags,
}

fn cutoff(ago: &str) -> Result<i64> {
    let d = humantime::parse_duration(ago)
        .with_context(|| format!("{ago:?} is not a duration (try 30m, 12h, 7d)"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    Ok(now.saturating_sub(d).as_millis() as i64)
}

pub async fn stats(args: StatsArgs) -> Result<Outcome> {
    let since = args.since.as_deref().map(cutoff).transpose()?.unwrap_or(0);
    let (store, name) = args.store.existing_store().await?;
    let s = match &store {
        Some(store) => store.performance_stats(since, args.tool.as_deref()).await?,
        None => Default::default(),
    };
    if args.store.json {
        outln!("{}", serde_json::to_string_pretty(&s)?)?;
        if store.is_none() {
            errln!("toolgraph: {}", nothing_yet(&name));
        }
        return Ok(Outcome::Success);
    }
    if store.is_none() {
        outln!("{}", nothing_yet(&name))?;
        return Ok(Outcome::Success);
    }
    outln!(
        "{} executions · {} calls · avg speedup {:.2}× · avg efficiency {:.0}% · success rate {:.1}% · avg makespan {:.1} ms",
        s.total_executions,
        s.total_calls,
        s.avg_speedup,
        s.avg_efficiency * 100.0,
        s.avg_success_rate * 100.0,
        s.avg_execution_time_ms
    )?;
    outln!(
        "{:<16}  {:>7}  {:>7}  {:>7}  {:>10}  {:>10}  {:>10}",
        "tool",
        "calls",
        "errors",
        "cached",
        "p50",
        "p95",
        "p99"
    )?;
    for (name, t) in &s.tools {
        outln!(
            "{:<16}  {:>7}  {:>6.1}%  {:>6.1}%  {:>7.1} ms  {:>7.1} ms  {:>7.1} ms",
            name,
            t.count,
            t.error_rate * 100.0,
            t.hit_rate * 100.0,
            t.p50_ms,
            t.p95_ms,
            t.p99_ms
        )?;
    }
    if !s.adaptive_limits.is_empty() {
        let limits: Vec<String> = s
            .adaptive_limits
            .iter()
            .map(|(key, limit)| format!("{key} {limit}"))
            .collect();
        outln!(
            "adaptive limits (at the end of the latest execution that had them): {}",
            limits.join(" · ")
        )?;
    }
    Ok(Outcome::Success)
}

#[derive(Args)]
pub struct PruneArgs {
    /// The executions to delete: ids, or prefixes no other id starts with (at least 4
    /// characters). With `--older-than` too, only those of them older than that.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Delete executions created longer ago than this (e.g. `30d`).
    #[arg(long, value_name = "DURATION", required_unless_present = "ids")]
    pub older_than: Option<String>,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete executions that never finished too (interrupted: `toolgraph resume` could
    /// finish them). One a live process runs is never deleted.
    #[arg(long)]
    pub include_interrupted: bool,
    #[command(flatten)]
    pub store: StoreFlags,
}

pub async fn prune(args: PruneArgs) -> Result<Outcome> {
    let created_before_ms = args.older_than.as_deref().map(cutoff).transpose()?;
    let (store, name) = args.store.existing_store().await?;
    if store.is_none()
        && let Some(first) = args.ids.first()
    {
        return Err(anyhow!("no execution {first}: {}", nothing_yet(&name)));
    }
    // Every id is resolved before anything is deleted: one unknown or ambiguous id and
    // nothing goes.
    let mut named: Vec<ExecutionSummary> = Vec::with_capacity(args.ids.len());
    if let Some(store) = &store {
        for given in &args.ids {
            let found = resolve(&**store, given).await?;
            if !named.iter().any(|s| s.id == found.id) {
                named.push(found);
            }
        }
    }
    let ids: Vec<String> = named.iter().map(|s| s.id.clone()).collect();
    let request = PruneRequest {
        created_before_ms: created_before_ms.unwrap_or(i64::MAX),
        ids: (!args.ids.is_empty()).then(|| ids.clone()),
        include_unfinished: args.include_interrupted,
        lease_timeout_ms: lease_timeout_ms(),
        dry_run: args.dry_run,
    };
    let pruned = match &store {
        Some(store) => store.prune(&request).await?,
        None => Default::default(),
    };
    if args.store.json {
        let mut out = serde_json::to_value(&pruned)?;
        if let Some(fields) = out.as_object_mut() {
            fields.insert("store".into(), name.clone().into());
            fields.insert("ids".into(), request.ids.clone().into());
            fields.insert("older_than".into(), args.older_than.clone().into());
            fields.insert("created_before_ms".into(), created_before_ms.into());
            fields.insert("dry_run".into(), args.dry_run.into());
        }
        outln!("{}", serde_json::to_string_pretty(&out)?)?;
        if store.is_none() {
            errln!("toolgraph: {}", nothing_yet(&name));
        }
        return Ok(Outcome::Success);
    }
    if store.is_none() {
        outln!("{}: nothing to prune", nothing_yet(&name))?;
        return Ok(Outcome::Success);
    }
    // Which executions were asked for, as the report names them.
    let which = match (&args.older_than, ids.len()) {
        (Some(ago), 0) => format!("execution(s) older than {ago}"),
        (None, named) => format!("of the {named} execution(s) named"),
        (Some(ago), named) => format!("of the {named} execution(s) named, older than {ago},"),
    };
    let now = toolgraph_store::now_ms();
    let n = pruned.deleted.len();
    if args.dry_run {
        outln!(
            "would prune {n} {which} from {name}{}",
            if n > 0 { ":" } else { "" }
        )?;
        list(&pruned.deleted, now, |_| String::new())?;
    } else {
        outln!("pruned {n} {which} from {name}")?;
    }
    if !pruned.kept_unfinished.is_empty() {
        outln!(
            "kept {} that never finished (interrupted: `toolgraph resume ID` could finish them; --include-interrupted deletes them too):",
            pruned.kept_unfinished.len()
        )?;
        list(&pruned.kept_unfinished, now, |_| String::new())?;
    }
    if !pruned.kept_live.is_empty() {
        outln!(
            "kept {} that a live process holds (never deleted):",
            pruned.kept_live.len()
        )?;
        list(&pruned.kept_live, now, |s| {
            s.owner
                .as_deref()
                .map(|o| format!("  in {o}"))
                .unwrap_or_default()
        })?;
    }
    if let Some(ago) = &args.older_than {
        // Named, but created since the cutoff: not selected at all.
        let reported = |id: &str| {
            [&pruned.deleted, &pruned.kept_unfinished, &pruned.kept_live]
                .iter()
                .any(|list| list.iter().any(|s| s.id == id))
        };
        let younger: Vec<ExecutionSummary> =
            named.iter().filter(|s| !reported(&s.id)).cloned().collect();
        if !younger.is_empty() {
            outln!(
                "kept {} created since (not older than {ago}):",
                younger.len()
            )?;
            list(&younger, now, |_| String::new())?;
        }
    }
    Ok(Outcome::Success)
}

/// Lines `id  created  status` (and `extra`), at most [`LISTED`].
fn list(
    rows: &[ExecutionSummary],
    now: i64,
    extra: impl Fn(&ExecutionSummary) -> String,
) -> Result<()> {
    for s in rows.iter().take(LISTED) {
        outln!(
            "  {}  {}  {}{}",
            s.id,
            when(s.created_at),
            status(s, now),
            extra(s)
        )?;
    }
    if rows.len() > LISTED {
        outln!(
            "  … and {} more (--json lists them all)",
            rows.len() - LISTED
        )?;
    }
    Ok(())
}
