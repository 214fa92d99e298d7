//! The llama.cpp runner under the real scheduler, against the default model (SmolLM2-135M):
//! a known greedy answer, batched = sequential, and prefix reuse = cold prefill.
//! The model comes from `scripts/fetch-model.sh` (or `TANDEM_TEST_MODEL`).

use std::path::PathBuf;
use std::sync::OnceLock;

use tandem_engine::{
    Event, NewRequest, PrefixReuse, Runner, SamplingParams, Scheduler, SchedulerConfig, Token,
    Usage,
};
use tandem_llama::{LlamaRunner, Model, RunnerConfig};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

fn model() -> Model {
    static M: OnceLock<Model> = OnceLock::new();
    *M.get_or_init(|| {
        let path = std::env::var_os("TANDEM_TEST_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").expect("HOME");
                PathBuf::from(home).join(".cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
            });
        Model::load(&path, 0).expect("run scripts/fetch-model.sh first")
    })
}

const SLOTS: usize = 4;

struct Rig {
    sched: Scheduler,
    runner: LlamaRunner,
}

impl Rig {
    fn new(budget: usize) -> Self {
        let cells = 1024;
        let cfg = SchedulerConfig {
            max_batch_tokens: budget,
            n_slots: SLOTS,
            cells_per_seq: cells,
            prefix_reuse: PrefixReuse::Exact,
        };
        let rc = RunnerConfig {
            n_slots: SLOTS,
            cells_per_seq: cells,
            max_batch_tokens: budget,
            threads: 2,
            flash_attn: Some(false),
            kv_unified: false,
        };
        Self {
            sched: Scheduler::new(cfg),
            runner: LlamaRunner::new(model(), &rc).unwrap(),
        }
    }

    fn submit(
        &mut self,
        id: u64,
        prompt: Vec<Token>,
        max_tokens: usize,
    ) -> UnboundedReceiver<Event> {
        let (tx, rx) = unbounded_channel();
        let sampling = SamplingParams {
            temperature: 0.0,
            ..Default::default()
        };
        let req = NewRequest {
            prompt,
            max_tokens,
            ignore_eos: false,
            sampling,
            events: tx,
        };
        self.sched.add(id, req, 0.0);
        rx
    }

    fn run(&mut self) {
        while !self.sched.is_idle() {
            let plan = self.sched.schedule(0.0);
            let res = self.runner.execute(&plan).expect("decode");
            self.sched.update(&plan, &res, 0.0);
        }
    }
}

fn drain(rx: &mut UnboundedReceiver<Event>) -> (Vec<Token>, Usage) {
    let mut toks = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            Event::Token(t) => toks.push(t),
            Event::Finished { usage, .. } => return (toks, usage),
            Event::Failed(m) => panic!("failed: {m}"),
        }
    }
    panic!("request did not finish")
}

fn text(tokens: &[Token]) -> String {
    let bytes: Vec<u8> = tokens.iter().flat_map(|&t| model().piece(t)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn chat(user: &str) -> Vec<Token> {
    let p = format!("<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n");
    model().tokenize(&p, false, true)
}

#[test]
fn known_prompt_greedy_output() {
    let mut rig = Rig::new(64);
    let mut rx = rig.submit(1, chat("What is the capital of France?"), 32);
    rig.run();
    let (toks, usage) = drain(&mut rx);
    assert!(text(&toks).contains("Paris"), "got {:?}", text(&toks));
    assert_eq!(usage.completion_tokens, toks.len() + 1, "stopped on EOG");
}

#[test]
fn batched_requests_match_sequential_ones() {
    let prompts = [
        "Name three colors.",
        "Write a haiku about rain.",
        "What is 2+2?",
    ];
    let mut solo = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut rig = Rig::new(512);
        let mut rx = rig.submit(i as u64, chat(p), 24);
        rig.run();
        solo.push(drain(&mut rx).0);
    }
    // Together, with a small budget so prefill chunks and decodes share steps.
    let mut rig = Rig::new(16);
    let mut rxs: Vec<_> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| rig.submit(i as u64, chat(p), 24))
        .collect();
    rig.run();
    for (i, rx) in rxs.iter_mut().enumerate() {
        assert_eq!(drain(rx).0, solo[i], "prompt {i}: {:?}", prompts[i]);
    }
}

#[test]
fn prefix_reuse_gives_the_tokens_of_a_cold_request() {
    let mut rig = Rig::new(64);
    let first = chat("Tell me about the moon.");
    let mut rx = rig.submit(1, first.clone(), 20);
    rig.run();
    let (reply, _) = drain(&mut rx);
    let mut second = first.clone();
    second.extend(&reply);
    second.extend(model().tokenize(
        "<|im_end|>\n<|im_start|>user\nAnd the sun?<|im_end|>\n<|im_start|>assistant\n",
        false,
        true,
    ));
    let mut rx = rig.submit(2, second.clone(), 20);
    rig.run();
    let (warm, usage) = drain(&mut rx);
    // Exact reuse: turn one's prompt KV (written by prefill) is reused, its reply is prefilled.
    assert_eq!(usage.cached_tokens, first.len());

    let mut cold = Rig::new(64);
    let mut rx = cold.submit(1, second, 20);
    cold.run();
    let (cold_toks, cold_usage) = drain(&mut rx);
    assert_eq!(cold_usage.cached_tokens, 0);
    assert_eq!(warm, cold_toks);
}
