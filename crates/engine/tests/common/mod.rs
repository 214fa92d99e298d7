//! The test harness shared by the scheduler and interception tests: a scheduler driven step
//! by step against the fake runner, with every plan checked (budget, row order, no one-token
//! prefill chunks) and the engine's KV and swap-pool accounting compared with what the runner
//! actually holds after every step.
#![allow(dead_code)]

use std::collections::HashMap;

use tandem_engine::fake::FakeRunner;
use tandem_engine::{
    Constraint, Event, InterceptConfig, InterceptSpec, NewRequest, PrefixReuse, Runner,
    SamplingParams, Scheduler, SchedulerConfig, SeqId, Token, Usage,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

pub struct Harness {
    pub sched: Scheduler,
    pub runner: FakeRunner,
    pub rxs: HashMap<u64, UnboundedReceiver<Event>>,
    pub log: HashMap<u64, Vec<Event>>,
    pub prompt_len: HashMap<u64, usize>,
    pub next: u64,
    pub now: f64,
    pub budget: usize,
    /// Ids in the order their final event was collected.
    pub finished: Vec<u64>,
    /// The predicted output given to the requests submitted from now on.
    pub prediction: Vec<Token>,
    /// Each step's rows' KV slots, in plan order.
    pub slots: Vec<Vec<SeqId>>,
}

impl Harness {
    pub fn new(n_slots: usize, cells: usize, budget: usize) -> Self {
        Self::with_reuse(n_slots, cells, budget, PrefixReuse::All)
    }

    pub fn with_reuse(
        n_slots: usize,
        cells: usize,
        budget: usize,
        prefix_reuse: PrefixReuse,
    ) -> Self {
        Self::build(
            n_slots,
            cells,
            budget,
            prefix_reuse,
            InterceptConfig::default(),
        )
    }

    pub fn build(
        n_slots: usize,
        cells: usize,
        budget: usize,
        prefix_reuse: PrefixReuse,
        intercept: InterceptConfig,
    ) -> Self {
        Self::with_config(config(n_slots, cells, budget, prefix_reuse, intercept))
    }

    /// A harness whose scheduler drafts by prompt lookup after `min` matching tokens.
    pub fn with_lookup(n_slots: usize, cells: usize, budget: usize, min: usize) -> Self {
        let intercept = InterceptConfig::default();
        Self::with_config(SchedulerConfig {
            prompt_lookup: min,
            compact_slots: true,
            ..config(n_slots, cells, budget, PrefixReuse::All, intercept)
        })
    }

    /// A harness whose requests stay in the slots they got (no slot compaction).
    pub fn without_compaction(n_slots: usize, cells: usize, budget: usize) -> Self {
        let intercept = InterceptConfig::default();
        Self::with_config(SchedulerConfig {
            compact_slots: false,
            ..config(n_slots, cells, budget, PrefixReuse::All, intercept)
        })
    }

    fn with_config(cfg: SchedulerConfig) -> Self {
        let (n_slots, cells, budget) = (cfg.n_slots, cfg.cells_per_seq, cfg.max_batch_tokens);
        Self {
            sched: Scheduler::new(cfg),
            runner: FakeRunner::new(n_slots, cells),
            rxs: HashMap::new(),
            log: HashMap::new(),
            prompt_len: HashMap::new(),
            next: 1,
            now: 0.0,
            budget,
            finished: Vec::new(),
            prediction: Vec::new(),
            slots: Vec::new(),
        }
    }

    pub fn submit(&mut self, prompt: Vec<Token>, max_tokens: usize) -> u64 {
        self.submit_with(prompt, max_tokens, InterceptSpec::default())
    }

    pub fn submit_with(
        &mut self,
        prompt: Vec<Token>,
        max_tokens: usize,
        intercept: InterceptSpec,
    ) -> u64 {
        self.submit_full(prompt, max_tokens, intercept, None)
    }

    pub fn submit_full(
        &mut self,
        prompt: Vec<Token>,
        max_tokens: usize,
        intercept: InterceptSpec,
        constraint: Option<Constraint>,
    ) -> u64 {
        let sampling = SamplingParams::default();
        self.submit_sampled(prompt, max_tokens, intercept, constraint, sampling)
    }

    pub fn submit_sampled(
        &mut self,
        prompt: Vec<Token>,
        max_tokens: usize,
        intercept: InterceptSpec,
        constraint: Option<Constraint>,
        sampling: SamplingParams,
    ) -> u64 {
        let (tx, rx) = unbounded_channel();
        let id = self.next;
        self.next += 1;
        self.prompt_len.insert(id, prompt.len());
        let req = NewRequest {
            prompt,
            max_tokens,
            ignore_eos: true,
            sampling,
            events: tx,
            intercept,
            constraint,
            prediction: self.prediction.clone(),
        };
        self.sched.add(id, req, self.now);
        self.rxs.insert(id, rx);
        id
    }

    pub fn step(&mut self) -> usize {
        self.now += 0.01;
        let plan = self.sched.schedule(self.now);
        assert!(plan.batch_tokens() <= self.budget, "plan over budget");
        assert!(
            plan.items.windows(2).all(|w| w[0].seq < w[1].seq),
            "rows not in seq order: {plan:?}"
        );
        for item in &plan.items {
            // One-token chunks only for decode (a one-row batch uses other kernels).
            let plen = self.prompt_len[&item.request];
            let decode = item.start_pos >= plen || plen == 1;
            assert!(
                item.tokens.len() >= 2 || decode,
                "1-token prefill chunk: {plan:?}"
            );
        }
        self.slots.push(plan.items.iter().map(|i| i.seq).collect());
        let result = self.runner.execute(&plan).expect("fake runner");
        self.sched.update(&plan, &result, self.now);
        self.collect();
        self.check_accounting();
        plan.batch_tokens()
    }

    pub fn run_to_idle(&mut self) {
        for _ in 0..10_000 {
            if self.sched.is_idle() {
                return;
            }
            self.step();
        }
        panic!("scheduler never went idle");
    }

    pub fn collect(&mut self) {
        for (id, rx) in &mut self.rxs {
            while let Ok(e) = rx.try_recv() {
                if matches!(e, Event::Finished { .. } | Event::Failed(_)) {
                    self.finished.push(*id);
                }
                self.log.entry(*id).or_default().push(e);
            }
        }
    }

    pub fn tokens(&self, id: u64) -> Vec<Token> {
        let events = self.log.get(&id).map_or(&[][..], Vec::as_slice);
        events
            .iter()
            .filter_map(|e| {
                if let Event::Token(t) = e {
                    Some(*t)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The finish event's cached-token count; panics if `id` has not finished.
    pub fn cached_tokens(&self, id: u64) -> usize {
        self.usage(id).cached_tokens
    }

    /// The finish event's usage; panics if `id` has not finished.
    pub fn usage(&self, id: u64) -> Usage {
        let Some(Event::Finished { usage, .. }) = self.finish(id) else {
            panic!("{id} did not finish")
        };
        usage
    }

    /// Sends a follow-up to the finished conversation `a` (prompt `pa`) and checks it reuses
    /// the whole turn: prompt and reply, but the reply's last token, whose KV decoding never
    /// wrote; then that every cell and buffer is free.
    pub fn follow_up_finds_its_whole_turn(&mut self, pa: &[Token], a: u64) {
        let reply = self.tokens(a);
        let follow = [pa.to_vec(), reply.clone(), prompt(5, 9)].concat();
        let f = self.submit(follow, 2);
        self.run_to_idle();
        assert_eq!(self.cached_tokens(f), pa.len() + reply.len() - 1);
        self.assert_all_free();
    }

    pub fn finish(&self, id: u64) -> Option<Event> {
        self.log
            .get(&id)?
            .iter()
            .find(|e| matches!(e, Event::Finished { .. } | Event::Failed(_)))
            .cloned()
    }

    pub fn check_accounting(&self) {
        if self.sched.pending_kv_ops() > 0 {
            return; // accounting already reflects ops the runner gets next step
        }
        for seq in 0..self.sched.kv().n_slots() as i32 {
            assert_eq!(
                self.runner.seq(seq).len(),
                self.sched.kv().used(seq),
                "seq {seq}"
            );
        }
        let pool = self.sched.swap_pool();
        let host = self.runner.host();
        assert_eq!(pool.len(), host.len(), "swap entries");
        let tokens: usize = host.values().map(Vec::len).sum();
        assert_eq!(pool.used_bytes(), pool.bytes(tokens), "swap bytes");
    }

    pub fn finish_order(&self) -> Vec<u64> {
        self.finished.clone()
    }

    /// Intercepted events a request received so far.
    pub fn interceptions(&self, id: u64) -> usize {
        let events = self.log.get(&id).map_or(&[][..], Vec::as_slice);
        events
            .iter()
            .filter(|e| matches!(e, Event::Intercepted { .. }))
            .count()
    }

    /// Steps until the request has been intercepted `n` times in total.
    pub fn step_until_paused(&mut self, id: u64, n: usize) {
        for _ in 0..10_000 {
            if self.interceptions(id) >= n {
                return;
            }
            self.step();
        }
        panic!("request {id} never paused");
    }

    /// Evicts everything retained and checks that no KV cell is left in use anywhere.
    pub fn assert_all_free(&mut self) {
        self.sched.evict_all_retained();
        self.step();
        assert_eq!(self.sched.kv().used_cells(), 0);
        assert_eq!(self.sched.kv().free_slots(), self.sched.kv().n_slots());
        assert_eq!(self.runner.used_cells(), 0);
        assert!(self.sched.swap_pool().is_empty(), "swap pool not empty");
        assert!(self.runner.host().is_empty(), "runner host buffers left");
    }
}

/// Two prompts that share their first `shared` tokens (a system prompt) and then differ.
/// A scheduler configuration without prompt lookup.
fn config(
    n_slots: usize,
    cells: usize,
    budget: usize,
    prefix_reuse: PrefixReuse,
    intercept: InterceptConfig,
) -> SchedulerConfig {
    SchedulerConfig {
        max_batch_tokens: budget,
        n_slots,
        cells_per_seq: cells,
        prefix_reuse,
        intercept,
        prompt_lookup: 0,
        compact_slots: true,
    }
}

pub fn sharing(shared: usize) -> (Vec<Token>, Vec<Token>) {
    let head = prompt(shared, 5);
    let a = [head.clone(), prompt(30, 1)].concat();
    let b = [head, prompt(30, 2)].concat();
    (a, b)
}

pub fn prompt(len: usize, salt: i32) -> Vec<Token> {
    (0..len as i32).map(|i| 10 + (i * 7 + salt) % 900).collect()
}
