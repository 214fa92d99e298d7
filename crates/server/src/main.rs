//! The `tandem` binary: `tandem serve` runs the OpenAI-compatible server, `tandem bench` the
//! load generator, `tandem simulate` the scheduler in virtual time. This is the only place
//! that reads the environment (HOME, XDG_CACHE_HOME, RUST_LOG, TANDEM_MODEL, and OpenMP's
//! GOMP_SPINCOUNT and OMP_WAIT_POLICY for `--omp-spin`).

mod api;
mod app;
mod auth;
mod bench;
mod costs;
mod error;
mod metrics_setup;
mod omp_spin;
mod script;
mod serve;
mod state;
mod template;
mod text;
mod tool_args;
mod tool_turn;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// tandem: an LLM inference server for tool-using requests (OpenAI-compatible, llama.cpp).
#[derive(Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a GGUF model over an OpenAI-compatible HTTP API with continuous batching.
    Serve(serve::ServeArgs),
    /// Load-test any OpenAI-compatible server (tandem, llama-server, ...) with a workload file.
    Bench(bench::BenchArgs),
    /// Run a bench workload through tandem's scheduler in virtual time, priced by a cost
    /// profile instead of a model (GPU-scale workloads in seconds; docs/simulate.md).
    Simulate(bench::simulate::SimArgs),
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".cache"),
    }
}

/// Puts `--omp-spin` in force (omp_spin.rs): libgomp has read its environment already, so a
/// count not yet there means running this binary again with it; this returns only when no
/// exec is needed or the exec failed (then the server goes on with libgomp's own count).
fn apply_omp_spin(flag: u64) {
    use omp_spin::SpinPlan;
    use std::os::unix::process::CommandExt;
    let var = |name| std::env::var(name).ok();
    let (spin, policy) = (var("GOMP_SPINCOUNT"), var("OMP_WAIT_POLICY"));
    match omp_spin::plan(flag, spin.as_deref(), policy.as_deref()) {
        SpinPlan::InForce(n) => tracing::info!(
            "llama.cpp's CPU threads spin {n} times at a barrier before sleeping (--omp-spin)"
        ),
        SpinPlan::UserSetting(s) => {
            tracing::warn!("{s} from the environment is in force, not --omp-spin {flag}")
        }
        SpinPlan::Reexec(n) => {
            let err = match std::env::current_exe() {
                Ok(exe) => std::process::Command::new(exe)
                    .args(std::env::args_os().skip(1))
                    .env("GOMP_SPINCOUNT", n.to_string())
                    .exec(),
                Err(e) => e,
            };
            tracing::warn!("could not run tandem again with GOMP_SPINCOUNT={n} ({err}); llama.cpp's threads keep libgomp's own spin count");
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Command::Serve(args) = &cli.command {
        if matches!(args.prefix_reuse, serve::ReuseArg::Exact) {
            // Bit-exact reuse needs KV that does not depend on how a prompt is cut; ggml takes
            // this switch only from the environment, and reads it once: set it before any
            // thread starts.
            tandem_llama::exactness::prefer_batch_invariant_kernels();
            tracing::info!("--prefix-reuse exact: ggml's tiled K-quant matmul is off (GGML_CPU_TILED_MM=0) and weights are not repacked, so KV does not depend on how a prompt is cut (docs/architecture.md)");
        }
        apply_omp_spin(args.omp_spin);
    }
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => {
            rt.block_on(serve::run(args, serve::default_model_path(cache_dir())))
        }
        Command::Bench(args) => rt.block_on(bench::run(args)),
        Command::Simulate(args) => rt.block_on(bench::simulate::run(args)),
    }
}
