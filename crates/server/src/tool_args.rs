//! `tandem serve`'s server-side tool options and the registry they build.

use std::sync::Arc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use tandem_tools::builtin::calc::Calc;
use tandem_tools::builtin::http_get::HttpGet;
use tandem_tools::builtin::plan::Plan;
use tandem_tools::builtin::python::{Python, PythonLimits};
use tandem_tools::builtin::search::Search;
use tandem_tools::builtin::validate::Validate;
use tandem_tools::runtime::{Registry, Tool};

#[derive(Args, Debug, Clone)]
pub struct ToolArgs {
    /// Server-side tools to register, comma-separated: python, search, plan, http_get,
    /// validate, calc (docs/server-tools.md). A request uses them by
    /// naming them in the `server_tools` extension field (docs/server-tools.md); the server
    /// runs their calls and continues the generation with the results.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub tools: Vec<String>,
    /// Partial execution: a server-side tool gets its arguments piece by piece while the
    /// model writes them (a statement, a query, a plan step) and starts work at once. `off`:
    /// a tool starts only when its call is complete (for comparison).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub partial_exec: OnOff,
    /// Partial results, with partial execution on: the start of a server-side tool's result
    /// that is already known (a plan's first steps, a search's first queries) is prefilled
    /// while the rest still runs. The request then resumes exactly as if the whole result
    /// had come at once. `off`: a result is prefilled only when its call returns.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub partial_results: OnOff,
    /// Wall-clock limit of one server-side tool call, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub tool_timeout: f64,
    /// CPU priority of tool processes (the `python` tool's interpreter), as a nice value
    /// added to the server's: 0 is the server's own priority, 19 the lowest. On a CPU-only
    /// server tools share cores with the decode: a higher value favours other requests'
    /// decoding over the tools, and a tool's last piece of work then waits for its own
    /// request's final tokens to be decoded (docs/server-tools.md).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=19))]
    pub tool_nice: i32,
    /// Folder of .txt/.md documents the `search` tool indexes at startup (default: the
    /// small corpus shipped in the repository's data/corpus).
    #[arg(long, value_name = "DIR")]
    pub search_dir: Option<PathBuf>,
    /// Delay added to every `search` query, in milliseconds, to stand in for a remote
    /// search service in benchmarks (the local index answers in under a millisecond).
    #[arg(long, default_value_t = 0)]
    pub search_latency_ms: u64,
    /// Documents each `search` query returns (with a snippet each).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=20))]
    pub search_top_k: u64,
    /// URL prefixes the `http_get` tool may fetch, comma-separated (e.g.
    /// http://127.0.0.1:9000/). Nothing else is fetched.
    #[arg(long, value_delimiter = ',', value_name = "PREFIXES")]
    pub http_allow: Vec<String>,
}

/// The corpus shipped with the source tree.
fn shipped_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/corpus")
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// The built-in tools.
pub const BUILTIN: &[&str] = &["python", "search", "plan", "http_get", "validate", "calc"];

impl ToolArgs {
    pub fn registry(&self) -> anyhow::Result<Registry> {
        if !(self.tool_timeout > 0.0 && self.tool_timeout.is_finite()) {
            bail!("--tool-timeout must be a positive number of seconds");
        }
        let mut reg = Registry::new(self.partial_exec == OnOff::On);
        reg.partial_results = self.partial_results == OnOff::On;
        for name in self.tools.iter().filter(|n| n.as_str() != "plan") {
            reg.add(self.tool(name)?);
        }
        if self.tools.iter().any(|n| n == "plan") {
            // Plan steps get their whole arguments at once: partial execution is the plan's.
            let mut steps = reg.clone();
            steps.partial = false;
            reg.add(Arc::new(Plan {
                tools: steps,
                max_steps: 16,
            }));
        }
        if !reg.names().is_empty() {
            tracing::info!(
                "server-side tools: {} (partial execution {}, partial results {})",
                reg.names().join(", "),
                if reg.partial { "on" } else { "off" },
                if reg.partial_results { "on" } else { "off" }
            );
        }
        Ok(reg)
    }

    fn tool(&self, name: &str) -> anyhow::Result<Arc<dyn Tool>> {
        let timeout = Duration::from_secs_f64(self.tool_timeout);
        Ok(match name {
            "python" => Arc::new(Python::new(PythonLimits {
                wall_seconds: self.tool_timeout,
                nice: self.tool_nice,
                ..PythonLimits::default()
            })),
            "search" => {
                let dir = self.search_dir.clone().unwrap_or_else(shipped_corpus);
                let latency = Duration::from_millis(self.search_latency_ms);
                let mut s =
                    Search::open(&dir, latency).with_context(|| "--tools search (--search-dir)")?;
                s.top_k = self.search_top_k as usize;
                tracing::info!("search: {} documents from {}", s.len(), dir.display());
                Arc::new(s)
            }
            "http_get" => {
                if self.http_allow.is_empty() {
                    bail!("--tools http_get needs --http-allow with the URL prefixes it may fetch");
                }
                Arc::new(HttpGet::new(self.http_allow.clone(), timeout))
            }
            "validate" => Arc::new(Validate),
            "calc" => Arc::new(Calc),
            other => bail!(
                "--tools: no built-in tool named '{other}' (available: {})",
                BUILTIN.join(", ")
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        tools: ToolArgs,
    }

    fn parse(args: &[&str]) -> ToolArgs {
        Cli::try_parse_from(std::iter::once("tandem").chain(args.iter().copied()))
            .expect("valid flags")
            .tools
    }

    #[test]
    fn search_top_k_reaches_the_tool() {
        let reg = parse(&["--tools", "search", "--search-top-k", "1"])
            .registry()
            .unwrap();
        let def = reg.def("search").expect("registered");
        assert!(def.description.unwrap().contains("up to 1 documents"));
        assert!(Cli::try_parse_from(["tandem", "--search-top-k", "0"]).is_err());
    }

    #[test]
    fn unknown_tools_and_bad_timeouts_are_refused() {
        assert!(parse(&["--tools", "nope"]).registry().is_err());
        assert!(parse(&["--tools", "calc", "--tool-timeout", "0"])
            .registry()
            .is_err());
        assert!(parse(&["--tools", "http_get"]).registry().is_err()); // needs --http-allow
        assert!(Cli::try_parse_from(["tandem", "--tool-nice", "20"]).is_err());
        assert!(Cli::try_parse_from(["tandem", "--tool-nice", "-1"]).is_err());
        assert_eq!(parse(&["--tool-nice", "7"]).tool_nice, 7);
    }
}
