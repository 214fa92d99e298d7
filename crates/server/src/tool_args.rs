//! `tandem serve`'s server-side tool options and the registry they build.

use std::sync::Arc;

use anyhow::bail;
use clap::Args;
use tandem_tools::builtin::python::{Python, PythonLimits};
use tandem_tools::runtime::Registry;

#[derive(Args, Debug, Clone)]
pub struct ToolArgs {
    /// Server-side tools to register, comma-separated: python. A request uses them by
    /// naming them in the `server_tools` extension field (docs/server-tools.md); the server
    /// runs their calls and continues the generation with the results.
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub tools: Vec<String>,
    /// Partial execution: a server-side tool gets its arguments piece by piece while the
    /// model writes them (a statement, a query, a plan step) and starts work at once. `off`:
    /// a tool starts only when its call is complete (for comparison).
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub partial_exec: OnOff,
    /// Wall-clock limit of one server-side tool call, in seconds.
    #[arg(long, default_value_t = 30.0)]
    pub tool_timeout: f64,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnOff {
    On,
    Off,
}

/// The built-in tools.
pub const BUILTIN: &[&str] = &["python"];

impl ToolArgs {
    pub fn registry(&self) -> anyhow::Result<Registry> {
        if !(self.tool_timeout > 0.0 && self.tool_timeout.is_finite()) {
            bail!("--tool-timeout must be a positive number of seconds");
        }
        let mut reg = Registry::new(self.partial_exec == OnOff::On);
        for name in &self.tools {
            match name.as_str() {
                "python" => reg.add(Arc::new(Python::new(PythonLimits {
                    wall_seconds: self.tool_timeout,
                    ..PythonLimits::default()
                }))),
                other => bail!(
                    "--tools: no built-in tool named '{other}' (available: {})",
                    BUILTIN.join(", ")
                ),
            }
        }
        if !reg.names().is_empty() {
            tracing::info!(
                "server-side tools: {} (partial execution {})",
                reg.names().join(", "),
                if reg.partial { "on" } else { "off" }
            );
        }
        Ok(reg)
    }
}
