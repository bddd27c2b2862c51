//! Configuration loading: `Config::load` on an arbitrary `toolgraph.toml` and arbitrary
//! `TOOLGRAPH_*` variables, and `parse_cli_spec` (the `--mcp NAME=…` flag).
//!
//! An input is the file's text, optionally followed by a line `#--env--` and one variable
//! per line (`NAME=VALUE`; `TOOLGRAPH_` is added when missing) or `--mcp SPEC`. The file is
//! written under a name of this process's own, and removed after each load.
//!
//! Checked: nothing panics; a configuration that loads has a valid executor section, and so
//! has the executor configuration built from it once its MCP servers validate; it survives
//! a round trip through TOML unchanged; every operator override applies to a tool of its
//! name, or is refused as invalid, and one that applies leaves a cost and a limit the
//! limiter can use; a `--mcp` spec that parses validates.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use toolgraph::Config;
use toolgraph_core::{ToolSet, ToolSetError, ToolSpec};

const ENV_MARKER: &str = "\n#--env--\n";

/// Where each input's file is written: in memory when the system has `/dev/shm` (a file
/// on disk costs ten times the rest of an input), removed again after every load.
fn config_file() -> &'static PathBuf {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("toolgraph-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let (file, env_text) = input.split_once(ENV_MARKER).unwrap_or((&input, ""));
    let mut env = Vec::new();
    for line in env_text.lines() {
        if let Some(spec) = line.strip_prefix("--mcp ") {
            if let Ok(server) = toolgraph::mcp::parse_cli_spec(spec)
                && let Err(e) = server.validate()
            {
                panic!("--mcp {spec:?} parses but does not validate: {e}");
            }
            continue;
        }
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        let name = if name.starts_with("TOOLGRAPH_") {
            name.to_owned()
        } else {
            format!("TOOLGRAPH_{name}")
        };
        env.push((name, value.to_owned()));
    }

    let path = config_file();
    if let Err(e) = std::fs::write(path, file.as_bytes()) {
        panic!("cannot write {}: {e}", path.display());
    }
    let loaded = Config::load(Some(path), env);
    let _ = std::fs::remove_file(path);
    let Ok((config, used)) = loaded else {
        return;
    };
    assert_eq!(used.as_ref(), Some(path));
    if let Err(e) = config.executor.validate() {
        panic!("a loaded configuration has an invalid executor section: {e}");
    }
    if config.mcp.iter().all(|s| s.validate().is_ok())
        && let Err(e) = toolgraph::executor_config(&config).validate()
    {
        panic!("valid sections make an invalid executor configuration: {e}");
    }

    // Written out and read back, nothing changes (compared as text: `nan` is a valid
    // value and never equals itself).
    let text = match toml::to_string(&config) {
        Ok(text) => text,
        Err(e) => panic!("a loaded configuration cannot be written as TOML: {e}"),
    };
    match toml::from_str::<Config>(&text).map(|again| toml::to_string(&again)) {
        Ok(Ok(again)) => assert_eq!(again, text, "round trip"),
        Ok(Err(e)) => panic!("a configuration read back cannot be written again: {e}"),
        Err(e) => panic!("a loaded configuration, written out, does not read back: {e}\n{text}"),
    }

    let mut tools = ToolSet::new();
    for name in config.tools.keys() {
        if tools
            .register_arc(std::sync::Arc::new(toolgraph_core::FnTool::new(
                ToolSpec::new(name.as_str()),
                |args: serde_json::Value, _| async move { Ok(args) },
            )))
            .is_err()
        {
            // Not a name a tool can have (empty, for one): nothing to apply it to.
            continue;
        }
    }
    for (name, settings) in &config.tools {
        if tools.index_of(name).is_none() {
            continue;
        }
        match tools.apply_override(name, settings) {
            Ok(()) => {
                let Some(entry) = tools.get(name) else {
                    panic!("{name} vanished");
                };
                let traits = &entry.tool.spec().traits;
                assert!(
                    traits.cost.cpu.is_finite() && traits.cost.cpu >= 0.0,
                    "override of {name} gives a cost the limiter cannot count: {}",
                    traits.cost.cpu
                );
                assert_ne!(traits.max_concurrency, Some(0), "{name} can never run");
            }
            Err(ToolSetError::InvalidTrait { .. }) => {}
            Err(e) => panic!("override of {name} does not apply: {e}"),
        }
    }
});
