//! `tandem serve`: loads the model, starts the engine thread (its runner's costs profiled at
//! startup or taken from `--costs`) and the HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use tandem_engine::sim::StepCost;
use tandem_engine::{
    spawn_engine, InterceptConfig, InterceptPolicy, PrefixReuse, ResumeOrder, Runner, Scheduler,
    SchedulerConfig, SystemClock,
};
use tandem_llama::{
    gpu_offload_supported, EmbedConfig, Embedder, LlamaRunner, Model, Pooling, RunnerConfig,
    Weights,
};
use tandem_tools::grammar::JsonLayout;
use tandem_tools::render::ResultTurns;

use crate::api::responses::store::ResponseStore;
use crate::costs;
use crate::state::AppState;
use crate::state::ToolSetup;
use crate::template::ChatTemplate;
use crate::tool_args::OnOff;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// GGUF model file. Default: the SmolLM2-135M-Instruct file that scripts/fetch-model.sh
    /// puts in the model cache ($XDG_CACHE_HOME or ~/.cache, under tandem/models).
    #[arg(long, env = "TANDEM_MODEL")]
    pub model: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// CPU threads for llama.cpp (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Times llama.cpp's CPU threads (OpenMP) spin at a barrier before they sleep and give
    /// their core to the server's other threads and its tools. libgomp's own default is
    /// 300000; a GOMP_SPINCOUNT or OMP_WAIT_POLICY set in the environment wins over this
    /// (docs/server-tools.md).
    #[arg(long, value_name = "COUNT", default_value_t = crate::omp_spin::DEFAULT_SPIN)]
    pub omp_spin: u64,
    /// Total KV cells (tokens) across all sequences. Each of the --max-seqs sequences gets an
    /// equal share (its own KV stream), which is also its context length.
    #[arg(long = "kv-cells", visible_alias = "ctx", default_value_t = 65536)]
    pub kv_cells: usize,
    /// Most sequences held at once: running requests plus finished conversations kept for
    /// prefix reuse. Requests beyond this wait in the queue.
    #[arg(long, default_value_t = 32)]
    pub max_seqs: usize,
    /// Most tokens per engine step: one decode token per running request plus prefill chunks
    /// (at least --max-seqs + 3, so a prompt chunk always fits beside the decodes).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Model name reported by /v1/models and accepted in requests (default: the file name
    /// without .gguf).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// A Jinja chat template (Hugging Face conventions) to use instead of the model's own, as
    /// llama-server's --chat-template-file and vLLM's --chat-template. Without it: the GGUF's
    /// template; a model with none gets Gemma's turn format if its vocabulary has Gemma's turn
    /// tokens, else ChatML.
    #[arg(long, value_name = "PATH")]
    pub chat_template_file: Option<PathBuf>,
    /// Most requests waiting for admission; beyond it requests get 503 (overloaded).
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Require this API key on every endpoint except /health and /metrics, sent as
    /// `Authorization: Bearer KEY` (what the `openai` client does with `api_key=`) or
    /// `x-api-key: KEY`; others get 401. Several keys: repeat the flag or separate them with
    /// commas. Default: no key needed (the server listens on 127.0.0.1 unless --host says
    /// otherwise).
    #[arg(
        long,
        env = "TANDEM_API_KEY",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "KEY"
    )]
    pub api_key: Vec<String>,
    /// Also accept the keys in this file, one per line (`#` starts a comment line), so keys
    /// stay out of the process list.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes (larger bodies get 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Responses API: how many responses are kept in memory for `previous_response_id` and
    /// `GET /v1/responses/{id}` (the least recently used are dropped first; 0 keeps none).
    #[arg(long, default_value_t = 1024)]
    pub max_stored_responses: usize,
    /// Which KV of finished requests a new request may reuse (a follow-up continues its
    /// conversation's; a new conversation copies the prefix it shares with one when that is
    /// cheaper than prefilling it). `all`: the whole previous turn, reply included (least
    /// prefill; like llama-server's cache, output can differ in the last bits from a cold
    /// request). `exact`: only KV written by prefill; with --flash-attn off a reused request's
    /// output is then identical to a cold one when it runs alone. For that, llama.cpp's
    /// kernels must not depend on how a prompt is cut: this mode turns ggml's tiled K-quant
    /// matmul off (GGML_CPU_TILED_MM=0) and loads weights unrepacked, which slows prefill on
    /// K-quant and Q4_0 models (docs/architecture.md). The split_exactness example checks a
    /// model.
    /// `off`: no reuse.
    #[arg(long, value_enum, default_value_t = ReuseArg::All)]
    pub prefix_reuse: ReuseArg,
    /// llama.cpp flash attention. `auto` (default): off when every layer runs on the CPU,
    /// llama.cpp's choice when layers are offloaded to a GPU (--gpu-layers, a `cuda` build).
    /// On a CPU its kernel is tiled from 64 query rows of a sequence and goes one row at a
    /// time below: every decode step, a resumed tool result, a draft. On the 2-core Xeon
    /// (bench/results/flash-attn-agent*.md, two runs) the client-side tool loop's mean latency
    /// was 0.52-0.62x with it off, the agent loop's 0.57-0.58x; after 1024-token prompts it decoded
    /// 1.68x faster off, while with it on prompts prefilled up to 1.47x faster
    /// (bench/results/flash-attn.md): `on` suits long prompts with short answers. Its CPU
    /// kernel also rounds differently for different prefill chunk sizes, so bit-exact prefix
    /// reuse needs it off (`--prefix-reuse exact`, docs/architecture.md).
    #[arg(long, value_enum, default_value_t = FlashArg::Auto)]
    pub flash_attn: FlashArg,
    /// What happens to a paused request's KV cache while its tool runs. `min-waste`: per
    /// request and step, the cheapest of keeping it, swapping it to host memory and
    /// discarding it (recomputed on resume), from costs measured at startup (InferCept);
    /// KV moves only when waiting requests need the slots. `preserve`, `swap`, `discard`:
    /// always that (discard with --resume-order tail is vLLM's behavior).
    #[arg(long, value_enum, default_value_t = PolicyArg::MinWaste)]
    pub intercept_policy: PolicyArg,
    /// Host memory for swapped-out KV, in GiB (paused requests and kept conversations).
    /// When it is short, the head that fits is swapped: a paused request recomputes its tail
    /// on resume, a kept conversation's follow-up prefills it.
    #[arg(long, default_value_t = 4.0)]
    pub swap_space: f64,
    /// Where a resumed request that lost its KV slot queues: `arrival` (ahead of new requests,
    /// in original arrival order) or `tail` (behind them, like a new request).
    #[arg(long, value_enum, default_value_t = OrderArg::Arrival)]
    pub resume_order: OrderArg,
    /// Take the interception policy's costs (forward time, attention, sampled rows, swap
    /// speed) from a cost file (`--save-costs` writes one; the JSON that `tandem simulate
    /// --costs` reads) or a built-in profile (`smollm2-cpu`, measured with flash attention
    /// on: it prices one-token rows' attention about 3x what they cost with it off) instead
    /// of profiling the model at startup: the same policy decisions at every start, and a
    /// start seconds faster. The file's KV bytes per token must be this model's (checked at
    /// startup). Default: profile at startup (docs/intercept.md).
    #[arg(long, value_name = "FILE|PRESET")]
    pub costs: Option<String>,
    /// Write the costs the server uses (its startup profile, or --costs) to this JSON file,
    /// for later starts with --costs FILE or for `tandem simulate --costs FILE`.
    #[arg(long, value_name = "FILE")]
    pub save_costs: Option<PathBuf>,
    /// Accept the `segments` extension (scripted tool calls the server pauses for; used by
    /// `tandem bench --server-side-tools`). Off by default: it lets a client hold a slot for
    /// the scripted tool time.
    #[arg(long)]
    pub allow_scripted: bool,
    /// Accept the `replay` extension on chat completions: the assistant text to produce,
    /// one string per turn, taken as the next tokens instead of sampling (real forward
    /// passes, real server-side tools). For benchmarks (`tandem bench --workload conveyor`).
    #[arg(long)]
    pub allow_replay: bool,
    /// Tool-call format to parse (and to describe tools in, when the chat template has no
    /// tool support): hermes (`<tool_call>{...}</tool_call>`), llama3 (JSON calls), mistral
    /// (`[TOOL_CALLS][...]`). Default: chosen from the model's chat template, hermes when it
    /// shows no format.
    #[arg(long, value_name = "NAME")]
    pub tool_call_parser: Option<tandem_tools::ParserKind>,
    /// Jump-forward decoding: text a grammar forces (a tool call's fixed JSON keys and closing
    /// tag, a JSON schema's keys) is appended as the model's tokenizer splits it and run
    /// through the model in one chunk, instead of one decode step per token. Off by default:
    /// the tokenizer's split of that text can differ from the one the model picks token by
    /// token, and a small model's output can then differ too (docs/tool-calling.md).
    #[arg(long, value_enum, default_value_t = OnOff::Off)]
    pub jump_forward: OnOff,
    /// How JSON output (`response_format`, `json_schema`, `guided_json`, ...) may be laid out.
    /// `compact`: on one line with `, ` and `: ` between items (the fewest tokens; a schema's
    /// keys are forced text). `indented`: one space, or a line break and up to 32 spaces or
    /// tabs, may stand between any two JSON tokens, so the model can write indented JSON, as a
    /// file it copies or a `prediction` is (drafts then follow the indentation). A request
    /// with vLLM's `structured_outputs.disable_any_whitespace: true` stays compact. Tool-call
    /// arguments are always compact.
    #[arg(long, value_enum, default_value_t = LayoutArg::Compact)]
    pub json_layout: LayoutArg,
    /// Prompt-lookup drafts (vLLM's `ngram` speculative method) for requests without a
    /// `prediction`: once the last N tokens of a request's context (prompt and output) also
    /// occur earlier in it, the tokens that followed are drafted and verified in one step, as a
    /// prediction is. Helps output that copies its prompt (editing a file, quoting a document);
    /// drafts start at one token, so output that copies nothing loses little (measured in
    /// docs/prediction.md; 3 is a good N). Not with `--prefix-reuse exact`. 0: off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prompt_lookup: usize,
    /// Keep running requests in consecutive KV slots: llama.cpp runs a batch over
    /// per-sequence KV as one forward pass per run of consecutive slots, so a request that
    /// comes back to a slot away from the others costs whole passes each step. With `on`,
    /// new requests take slots beside running ones, and KV is moved (copied, as a prefix copy
    /// is) into one window of slots when the copy costs less than the passes it saves
    /// (docs/kv-layout.md). `off`: each request stays in the slot it got.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub slot_compaction: OnOff,
    /// Serve `POST /v1/embeddings` (as llama-server's `--embeddings`): a second llama.cpp
    /// context over the same model computes pooled, unit-length vectors of the model's hidden
    /// size on its own thread (beside the engine's, not in its batches), packing inputs (of
    /// one request or of several waiting ones) into shared decodes (--embeddings-pack).
    /// Off by default: a causal chat model is not an embedding model, and its vectors are only
    /// as good as that.
    #[arg(long)]
    pub embeddings: bool,
    /// How /v1/embeddings pools a sequence's token vectors: `mean`, `last` (the last token's)
    /// or `cls` (the first token's).
    #[arg(long, value_enum, default_value_t = PoolingArg::Mean)]
    pub pooling: PoolingArg,
    /// The most /v1/embeddings inputs packed into one decode; their tokens together are also
    /// at most a sequence's context (--kv-cells / --max-seqs). Short inputs then make one
    /// large matrix product instead of many small ones. 1: one input per decode.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub embeddings_pack: u16,
    #[command(flatten)]
    pub tool_args: crate::tool_args::ToolArgs,
    /// Model layers to offload to a GPU (99: all). Only a `cuda` build (scripts/build-cuda.sh,
    /// docs/gpu.md) has a GPU backend; other builds warn and run every layer on the CPU.
    #[arg(long, default_value_t = 0)]
    pub gpu_layers: u32,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PoolingArg {
    Mean,
    Last,
    Cls,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::Mean => Pooling::Mean,
            PoolingArg::Last => Pooling::Last,
            PoolingArg::Cls => Pooling::Cls,
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutArg {
    Compact,
    Indented,
}

impl From<LayoutArg> for JsonLayout {
    fn from(l: LayoutArg) -> Self {
        match l {
            LayoutArg::Compact => JsonLayout::Compact,
            LayoutArg::Indented => JsonLayout::Indented,
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum FlashArg {
    Auto,
    On,
    Off,
}

impl FlashArg {
    /// The runner's setting (`None`: llama.cpp decides). `auto` is tandem's own rule rather
    /// than llama.cpp's (which turns it on wherever the kernel exists, the CPU included):
    /// off unless layers run on a GPU, since on the CPU tandem's workload, decode steps and
    /// short chunks after long contexts, runs slower with it (measured above `flash_attn`).
    fn policy(self, gpu_layers: u32, gpu_build: bool) -> Option<bool> {
        match self {
            Self::Auto if gpu_layers > 0 && gpu_build => None,
            Self::Auto | Self::Off => Some(false),
            Self::On => Some(true),
        }
    }
}

/// Why `--gpu-layers` does nothing in this build, if it does nothing (as llama-server, tandem
/// then serves on the CPU rather than refusing to start).
fn ignored_gpu_layers(gpu_layers: u32, gpu_build: bool) -> Option<String> {
    (gpu_layers > 0 && !gpu_build).then(|| {
        format!(
            "--gpu-layers {gpu_layers} is ignored: this build has no GPU backend; \
             every layer runs on the CPU (scripts/build-cuda.sh builds one with CUDA)"
        )
    })
}

/// How the startup log names a flash-attention setting.
fn flash_text(policy: Option<bool>) -> &'static str {
    match policy {
        None => "llama.cpp's choice",
        Some(true) => "on",
        Some(false) => "off",
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum PolicyArg {
    MinWaste,
    Preserve,
    Swap,
    Discard,
}

impl From<PolicyArg> for InterceptPolicy {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::MinWaste => InterceptPolicy::MinWaste,
            PolicyArg::Preserve => InterceptPolicy::Preserve,
            PolicyArg::Swap => InterceptPolicy::Swap,
            PolicyArg::Discard => InterceptPolicy::Discard,
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum OrderArg {
    Arrival,
    Tail,
}

impl From<OrderArg> for ResumeOrder {
    fn from(o: OrderArg) -> Self {
        match o {
            OrderArg::Arrival => ResumeOrder::Arrival,
            OrderArg::Tail => ResumeOrder::Tail,
        }
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ReuseArg {
    Exact,
    All,
    Off,
}

impl From<ReuseArg> for PrefixReuse {
    fn from(r: ReuseArg) -> Self {
        match r {
            ReuseArg::Exact => PrefixReuse::Exact,
            ReuseArg::All => PrefixReuse::All,
            ReuseArg::Off => PrefixReuse::Off,
        }
    }
}

impl ReuseArg {
    /// Bit-exact reuse needs KV that does not depend on how a prompt is cut, so its weights
    /// stay as stored (no repacked kernels); the other modes take llama.cpp's faster layout.
    fn weights(self) -> Weights {
        match self {
            ReuseArg::Exact => Weights::AsStored,
            ReuseArg::All | ReuseArg::Off => Weights::Repacked,
        }
    }
}

/// Where the runner's costs come from (`--costs`) and where they go (`--save-costs`).
struct CostChoice {
    /// The `--costs` argument and what it loaded.
    given: Option<(String, costs::CostFile)>,
    save: Option<PathBuf>,
}

impl CostChoice {
    /// Loads `--costs` (a bad file or preset name fails here, before the model's context).
    fn new(args: &ServeArgs) -> anyhow::Result<Self> {
        let given = match &args.costs {
            Some(spec) => Some((spec.clone(), costs::load(spec)?)),
            None => None,
        };
        Ok(Self {
            given,
            save: args.save_costs.clone(),
        })
    }

    /// Builds the runner (on the engine thread) with its costs given or profiled, and saves
    /// them when asked. The engine's own `profile` call then returns the same costs.
    fn runner(self, model: Model, rc: &RunnerConfig) -> anyhow::Result<LlamaRunner> {
        let mut r = LlamaRunner::new(model, rc)?;
        if let Some((spec, file)) = self.given {
            r.use_costs(StepCost::from(file).model)
                .with_context(|| format!("--costs {spec}"))?;
            tracing::info!("costs from --costs {spec}, not profiled");
        }
        if let Some(path) = self.save {
            let c = r.profile().context("cost profile for --save-costs")?;
            let json = serde_json::to_string_pretty(&costs::CostFile::from(c))?;
            std::fs::write(&path, json + "\n")
                .with_context(|| format!("--save-costs {}", path.display()))?;
        }
        Ok(r)
    }
}

/// Where scripts/fetch-model.sh puts the default model, given the cache directory.
pub fn default_model_path(cache_dir: PathBuf) -> PathBuf {
    cache_dir.join("tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The chat template's Jinja source, and whether it was given (by --chat-template-file or
/// the GGUF) rather than a built-in fallback.
fn chat_template_source(args: &ServeArgs, model: &Model) -> anyhow::Result<(String, bool)> {
    if let Some(path) = &args.chat_template_file {
        let src = std::fs::read_to_string(path)
            .with_context(|| format!("--chat-template-file {}", path.display()))?;
        tracing::info!("chat template from {}", path.display());
        return Ok((src, true));
    }
    if let Some(src) = model.chat_template() {
        return Ok((src, true));
    }
    let one_token = |t: &str| model.tokenize(t, false, true).len() == 1;
    let (src, name) =
        crate::template::fallback(one_token("<start_of_turn>") && one_token("<end_of_turn>"));
    tracing::warn!("the model has no chat template; using {name} (--chat-template-file gives one)");
    Ok((src.to_string(), false))
}

fn served_name(args: &ServeArgs, path: &std::path::Path) -> String {
    args.served_model_name.clone().unwrap_or_else(|| {
        path.file_name().map_or("model".into(), |n| {
            n.to_string_lossy().trim_end_matches(".gguf").to_string()
        })
    })
}

pub async fn run(args: ServeArgs, default_model: PathBuf) -> anyhow::Result<()> {
    let path = args.model.clone().unwrap_or(default_model);
    if !path.is_file() {
        bail!("no model at {}\n  fetch the default model with: scripts/fetch-model.sh\n  or pass --model PATH to a GGUF file", path.display());
    }
    if args.max_seqs == 0 {
        bail!("--max-seqs must be at least 1");
    }
    let min_batch = Scheduler::min_batch_tokens(args.max_seqs);
    if args.max_batch_tokens < min_batch {
        bail!("--max-batch-tokens must be at least --max-seqs + 3 ({min_batch}): each step must fit a decode token per sequence and a prefill chunk");
    }
    if args.prompt_lookup > 0 && matches!(args.prefix_reuse, ReuseArg::Exact) {
        bail!("--prompt-lookup cannot be combined with --prefix-reuse exact: drafted rows run in multi-row batches, which round differently from the one-row decodes bit-exact mode repeats");
    }
    let registry = Arc::new(args.tool_args.registry()?);
    let costs = CostChoice::new(&args)?;
    if let Some(note) = ignored_gpu_layers(args.gpu_layers, gpu_offload_supported()) {
        tracing::warn!("{note}");
    }
    let model = Model::load_with(&path, args.gpu_layers, args.prefix_reuse.weights())?;
    // Before the engine starts (and profiles): a bad template file stops the start at once.
    let (source, given) = chat_template_source(&args, &model)?;
    let bos = model.special_text(model.bos());
    let eos = model.special_text(model.eos());
    let template = ChatTemplate::new(source.clone(), bos, eos).context("chat template")?;
    let mut cells_per_seq = args.kv_cells / args.max_seqs;
    if cells_per_seq > model.n_ctx_train() {
        tracing::warn!(
            "{cells_per_seq} cells per sequence exceeds the model's training context; using {}",
            model.n_ctx_train()
        );
        cells_per_seq = model.n_ctx_train();
    }
    if !(args.swap_space >= 0.0 && args.swap_space.is_finite()) {
        bail!("--swap-space must be a number of GiB, 0 or more");
    }
    if cells_per_seq < 16 {
        bail!("--kv-cells / --max-seqs gives {cells_per_seq} cells per sequence; need at least 16");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let sched = SchedulerConfig {
        max_batch_tokens: args.max_batch_tokens,
        n_slots: args.max_seqs,
        cells_per_seq,
        prefix_reuse: args.prefix_reuse.into(),
        intercept: InterceptConfig {
            policy: args.intercept_policy.into(),
            resume_order: args.resume_order.into(),
            swap_bytes: (args.swap_space * (1u64 << 30) as f64) as usize,
        },
        prompt_lookup: args.prompt_lookup,
        compact_slots: args.slot_compaction == OnOff::On,
    };
    let rc = RunnerConfig {
        n_slots: args.max_seqs,
        cells_per_seq,
        max_batch_tokens: args.max_batch_tokens,
        threads,
        flash_attn: args
            .flash_attn
            .policy(args.gpu_layers, gpu_offload_supported()),
        kv_unified: false,
    };
    let rc_flash = rc.flash_attn;
    // Before the engine starts: it exports its measured costs at startup.
    let metrics = crate::metrics_setup::install()?;
    let (engine, _join) = spawn_engine(
        sched,
        args.max_queue,
        Box::new(SystemClock::new()),
        move || costs.runner(model, &rc),
    )?;
    let jump_forward = args.jump_forward == OnOff::On;
    let results = if template.writes_tool_turns() {
        ResultTurns::Tool
    } else {
        ResultTurns::Wrapped
    };
    let tools = ToolSetup::new(
        &model,
        given.then_some(source.as_str()),
        results,
        args.tool_call_parser,
        jump_forward,
        args.json_layout.into(),
    )?;
    let embedder = args
        .embeddings
        .then(|| {
            let cfg = EmbedConfig {
                pooling: args.pooling.into(),
                max_tokens: cells_per_seq,
                max_seqs: args.embeddings_pack.into(),
                threads,
            };
            Embedder::start(model, cfg)
        })
        .transpose()
        .context("embeddings context")?;
    let st = Arc::new(AppState {
        engine,
        model,
        template,
        served_name: served_name(&args, &path),
        cells_per_seq,
        body_limit: args.max_body_bytes,
        allow_scripted: args.allow_scripted,
        allow_replay: args.allow_replay,
        tools,
        registry,
        metrics,
        responses: Arc::new(ResponseStore::new(args.max_stored_responses)),
        created: crate::api::chat::unix_now(),
        api_keys: api_keys(&args)?,
        embedder,
    });
    if st.api_keys.is_empty() && !is_loopback(&args.host) {
        tracing::warn!(
            "listening on {} without --api-key: anyone who can reach it can use it",
            args.host
        );
    }
    let addr: SocketAddr = format!("{}:{}", args.host, args.port)
        .parse()
        .context("--host/--port")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    tracing::info!(
        "serving {} ({}) on http://{addr}: {} seqs x {cells_per_seq} KV cells, batch {} tokens, {threads} threads, flash attention {} (--flash-attn {:?})",
        st.served_name, path.display(), args.max_seqs, args.max_batch_tokens,
        flash_text(rc_flash), args.flash_attn
    );
    axum::serve(listener, crate::app::router(st))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

/// The API keys from --api-key and --api-key-file.
fn api_keys(args: &ServeArgs) -> anyhow::Result<crate::auth::ApiKeys> {
    let file = match &args.api_key_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("--api-key-file {}", p.display()))?,
        ),
        None => None,
    };
    let keys = crate::auth::ApiKeys::new(&args.api_key, file.as_deref());
    if keys.is_empty() && (!args.api_key.is_empty() || file.is_some()) {
        bail!("--api-key / --api-key-file given but no key in them");
    }
    if !keys.is_empty() {
        tracing::info!("API keys required ({} accepted)", keys.len());
    }
    Ok(keys)
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_flash_attention_is_off_unless_layers_run_on_a_gpu() {
        assert_eq!(FlashArg::Auto.policy(0, false), Some(false));
        assert_eq!(FlashArg::Auto.policy(0, true), Some(false));
        assert_eq!(
            FlashArg::Auto.policy(32, false),
            Some(false),
            "no GPU in this build"
        );
        assert_eq!(FlashArg::Auto.policy(32, true), None);
        assert_eq!(FlashArg::On.policy(0, false), Some(true));
        assert_eq!(FlashArg::Off.policy(32, true), Some(false));
    }

    #[test]
    fn gpu_layers_in_a_cpu_build_are_named_as_ignored() {
        let note = ignored_gpu_layers(99, false).expect("a note");
        assert!(note.contains("--gpu-layers 99") && note.contains("scripts/build-cuda.sh"));
        assert_eq!(ignored_gpu_layers(0, false), None);
        assert_eq!(ignored_gpu_layers(99, true), None);
    }
}
