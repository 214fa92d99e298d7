//! The Prometheus recorder behind `GET /metrics`: histogram buckets and metric descriptions.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
];

/// Forward passes (llama.cpp ubatches) in one step.
const PASS_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0];

pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("tandem_step_batch_tokens".into()),
            TOKEN_BUCKETS,
        )?
        .set_buckets_for_metric(Matcher::Full("tandem_step_passes".into()), PASS_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    describe_counter!(
        "tandem_requests_total",
        "API requests by path and HTTP status"
    );
    describe_counter!(
        "tandem_finished_requests_total",
        "Generations by finish reason"
    );
    describe_gauge!("tandem_queue_length", "Requests waiting for a KV slot");
    describe_counter!(
        "tandem_embedding_inputs_total",
        "Inputs embedded by /v1/embeddings"
    );
    describe_counter!(
        "tandem_embedding_tokens_total",
        "Tokens embedded by /v1/embeddings"
    );
    describe_histogram!(
        "tandem_embedding_request_seconds",
        Unit::Seconds,
        "Time to embed one /v1/embeddings request, waiting for the embedding thread included"
    );
    describe_counter!(
        "tandem_constraint_masks_total",
        "Allowed-token masks computed for constrained requests (tool calls, response_format)"
    );
    describe_counter!(
        "tandem_constraint_mask_microseconds_total",
        "Engine-thread time spent computing those masks"
    );
    describe_gauge!(
        "tandem_running_requests",
        "Requests admitted and generating"
    );
    describe_gauge!(
        "tandem_retained_sequences",
        "Finished sequences kept for prefix reuse"
    );
    describe_gauge!(
        "tandem_kv_cells_used",
        "KV cells in use (running and retained sequences)"
    );
    describe_gauge!(
        "tandem_kv_cells_retained",
        "KV cells retained sequences hold on the device (of tandem_kv_cells_used)"
    );
    describe_gauge!("tandem_kv_cells_free", "KV cells free");
    describe_counter!(
        "tandem_prompt_tokens_total",
        "Prompt tokens of admitted requests"
    );
    describe_counter!(
        "tandem_prefix_reused_tokens_total",
        "Prompt tokens served from retained KV"
    );
    describe_counter!(
        "tandem_appended_tokens_total",
        "Tokens appended to paused requests on resume (tool results and the template text around them)"
    );
    describe_counter!("tandem_generation_tokens_total", "Generated tokens");
    describe_counter!(
        "tandem_prediction_accepted_tokens_total",
        "Predicted tokens (the prediction field) drafted and taken as output"
    );
    describe_counter!(
        "tandem_prediction_rejected_tokens_total",
        "Predicted tokens drafted and rejected (rows computed for nothing)"
    );
    describe_counter!(
        "tandem_lookup_accepted_tokens_total",
        "Prompt-lookup drafts (--prompt-lookup) taken as output"
    );
    describe_counter!(
        "tandem_lookup_rejected_tokens_total",
        "Prompt-lookup drafts rejected (rows computed for nothing)"
    );
    describe_counter!(
        "tandem_forward_microseconds_total",
        "Engine time in forward passes (steps with at least one row)"
    );
    describe_counter!(
        "tandem_recompute_microseconds_total",
        "The part of that time spent recomputing discarded KV"
    );
    describe_counter!(
        "tandem_partial_swaps_total",
        "Paused requests swapped out in part: the head the host pool had room for, the tail discarded"
    );
    describe_counter!(
        "tandem_retained_partial_swaps_total",
        "Retained conversations swapped out in part: the head the host pool had room for, the tail dropped"
    );
    describe_counter!(
        "tandem_forward_passes_total",
        "Forward passes over the weights: llama.cpp cuts a step's batch into ubatches of consecutive sequence ids, the same tokens of each (counted by replaying its split)"
    );
    describe_histogram!("tandem_step_passes", "Forward passes per engine step");
    describe_counter!(
        "tandem_slot_moves_total",
        "KV moved to another slot to keep running requests in consecutive slots (one forward pass per run of slots)"
    );
    describe_counter!("tandem_slot_moved_tokens_total", "KV tokens so moved");
    describe_counter!(
        "tandem_prefix_copies_total",
        "New requests whose prefix shared with a retained conversation was copied into their slot instead of prefilled"
    );
    describe_counter!(
        "tandem_prefix_copied_tokens_total",
        "Prompt tokens so copied (also counted in tandem_prefix_reused_tokens_total)"
    );
    describe_histogram!(
        "tandem_time_to_first_token_seconds",
        Unit::Seconds,
        "Arrival to first token"
    );
    describe_histogram!(
        "tandem_inter_token_latency_seconds",
        Unit::Seconds,
        "Time between tokens of a request"
    );
    describe_histogram!(
        "tandem_step_duration_seconds",
        Unit::Seconds,
        "Engine step (one batch) time"
    );
    describe_histogram!("tandem_step_batch_tokens", "Tokens run per engine step");
}
