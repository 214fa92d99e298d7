//! The built-in tools other than `python`, through the runtime: `search` fires each query
//! when its string is complete, `validate` aborts at the first bad record before the call is
//! complete, `plan` dispatches steps as they complete (independent ones in parallel, `$k`
//! references resolved), `http_get` honours its allow-list, `calc`; a crashing tool becomes
//! an error result. `plan` and `search` publish their results' starts as steps and queries
//! finish, each the beginning of the final result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tandem_tools::arg_events::ArgEvent;
use tandem_tools::builtin::{
    calc::Calc, http_get::HttpGet, plan::Plan, python, search::Search, validate::Validate,
};
use tandem_tools::defs::ToolDef;
use tandem_tools::runtime::{Registry, ResultPrefix, Tool, ToolFuture, ToolOutput};
use tokio::sync::mpsc::UnboundedReceiver;

fn corpus() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/corpus")
}

fn search_registry(partial: bool, latency_ms: u64) -> Registry {
    let mut r = Registry::new(partial);
    r.add(Arc::new(
        Search::open(&corpus(), Duration::from_millis(latency_ms)).unwrap(),
    ));
    r
}

#[tokio::test]
async fn search_finds_documents_by_content() {
    let mut call = search_registry(true, 0).start("search").unwrap();
    call.feed(r#"{"queries": ["lighthouse lens", "volcano eruption"]}"#);
    let out = call.finish().await;
    assert!(!out.is_error, "{out:?}");
    let v: Value = serde_json::from_str(&out.content).unwrap();
    assert_eq!(v[0]["query"], "lighthouse lens");
    assert_eq!(v[0]["hits"][0]["title"], "lighthouses", "{v}");
    assert_eq!(v[1]["hits"][0]["title"], "volcanoes", "{v}");
}

/// Each query takes 1.5 s; the query is written 2 s before the call completes. With partial
/// execution its answer is ready when the call completes; without, it starts only then.
#[tokio::test]
async fn search_queries_fire_when_their_string_closes() {
    for (partial, early) in [(true, true), (false, false)] {
        let mut call = search_registry(partial, 1500).start("search").unwrap();
        call.feed(r#"{"queries": ["lighthouse"]"#);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        call.feed("}");
        let t = Instant::now();
        let out = call.finish().await;
        assert!(!out.is_error, "{out:?}");
        let waited = t.elapsed().as_secs_f64();
        assert_eq!(
            waited < 0.75,
            early,
            "partial={partial}: waited {waited} s after the call"
        );
    }
}

#[tokio::test]
async fn search_rejects_bad_arguments() {
    let mut call = search_registry(true, 0).start("search").unwrap();
    call.feed(r#"{"queries": []}"#);
    assert!(call.finish().await.is_error);
    let mut call = search_registry(true, 0).start("search").unwrap();
    call.feed(r#"{"queries": ["cut off"#);
    assert!(call.finish().await.is_error);
}

fn registry_with(partial: bool, tools: Vec<Arc<dyn Tool>>) -> Registry {
    let mut r = Registry::new(partial);
    tools.into_iter().for_each(|t| r.add(t));
    r
}

#[tokio::test]
async fn validate_aborts_at_the_first_bad_record_before_the_call_is_complete() {
    let bad = r#"{"records": [{"name": "Ann", "email": "ann@example.org", "age": 31}, {"name": "Bob", "email": "bob-at-example", "age": 40}, "#;
    for partial in [true, false] {
        let mut call = registry_with(partial, vec![Arc::new(Validate)])
            .start("validate")
            .unwrap();
        call.feed(bad);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            call.is_done(),
            partial,
            "aborted early only with partial execution"
        );
        call.feed(r#"{"name": "Cy", "email": "cy@example.org", "age": 5}]}"#);
        let out = call.finish().await;
        assert!(out.is_error && out.content.contains("record 1"), "{out:?}");
    }
    let mut call = registry_with(true, vec![Arc::new(Validate)])
        .start("validate")
        .unwrap();
    call.feed(r#"{"records": [{"name": "Ann", "email": "ann@example.org", "age": 31}]}"#);
    assert_eq!(call.finish().await, ToolOutput::ok("registered 1 records"));
}

#[tokio::test]
async fn calc_evaluates() {
    let mut call = registry_with(true, vec![Arc::new(Calc)])
        .start("calc")
        .unwrap();
    call.feed(r#"{"expression": "(2 + 3) * 4"}"#);
    assert_eq!(call.finish().await, ToolOutput::ok("20"));
    let mut call = registry_with(true, vec![Arc::new(Calc)])
        .start("calc")
        .unwrap();
    call.feed(r#"{"expression": "2 +"}"#);
    assert!(call.finish().await.is_error);
}

fn plan_registry(partial: bool) -> Registry {
    let py: Arc<dyn Tool> = Arc::new(python::Python::new(python::PythonLimits::default()));
    let steps = registry_with(false, vec![Arc::new(Calc), py]);
    registry_with(
        partial,
        vec![Arc::new(Plan {
            tools: steps,
            max_steps: 8,
        })],
    )
}

#[tokio::test]
async fn plan_resolves_references_to_earlier_steps() {
    let mut call = plan_registry(true).start("plan").unwrap();
    call.feed(r#"{"steps": [{"tool": "calc", "arguments": {"expression": "6 * 7"}}, {"tool": "calc", "arguments": {"expression": "$0 + 1"}}]}"#);
    let out = call.finish().await;
    let v: Value = serde_json::from_str(&out.content).unwrap();
    assert_eq!(
        (v[0]["content"].clone(), v[1]["content"].clone()),
        (json!("42"), json!("43")),
        "{v}"
    );
    let mut call = plan_registry(true).start("plan").unwrap();
    call.feed(r#"{"steps": [{"tool": "calc", "arguments": {"expression": "$1"}}, {"tool": "nope", "arguments": {}}]}"#);
    let out = call.finish().await;
    assert!(
        out.is_error
            && out.content.contains("not an earlier step")
            && out.content.contains("no tool named"),
        "{out:?}"
    );
}

/// Two independent one-second steps run in parallel, and the first starts while the second
/// is still being written.
#[tokio::test]
async fn plan_dispatches_steps_as_they_complete_and_in_parallel() {
    let step = r#"{"tool": "python", "arguments": {"code": "import time\ntime.sleep(1.0)\n1"}}"#;
    let mut call = plan_registry(true).start("plan").unwrap();
    call.feed(&format!(r#"{{"steps": [{step}, "#));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    call.feed(&format!(r#"{step}, {step}]}}"#));
    let out = call.finish().await;
    let waited = t.elapsed().as_secs_f64();
    assert!(!out.is_error, "{out:?}");
    // Steps 1 and 2 ran side by side (about 1 s, not 2); step 0 was done already.
    assert!(waited < 1.8, "{waited}");
}

/// Every result start a call published, in order, until it returned; and its output.
async fn published(call: tandem_tools::runtime::Running) -> (Vec<String>, ToolOutput) {
    let mut rx = call.result_prefix();
    let watcher = tokio::spawn(async move {
        let mut seen = Vec::new();
        while rx.changed().await.is_ok() {
            let start = rx.borrow_and_update().clone();
            if start.complete {
                return (seen, Some(start.text));
            }
            seen.push(start.text);
        }
        (seen, None)
    });
    let out = call.finish().await;
    let (seen, whole) = watcher.await.unwrap();
    // The whole result is published last, when there is one without error.
    assert_eq!(whole, (!out.is_error).then(|| out.content.clone()));
    (seen, out)
}

/// The plan's first step is done well before its last (a 0.4 s search): the first step's
/// result is published on its own first, and every start published begins the final result,
/// which comes last. A failed step stops the publishing (the result will be an error).
#[tokio::test]
async fn plan_and_search_publish_the_start_of_their_result() {
    let mut reg = Registry::new(true);
    reg.add(Arc::new(
        Search::open(&corpus(), Duration::from_millis(400)).unwrap(),
    ));
    let py: Arc<dyn Tool> = Arc::new(python::Python::new(python::PythonLimits::default()));
    reg.add(py);
    let plan = registry_with(
        true,
        vec![Arc::new(Plan {
            tools: reg.clone(),
            max_steps: 8,
        })],
    );
    let mut call = plan.start("plan").unwrap();
    call.feed(r#"{"steps": [{"tool": "python", "arguments": {"code": "print(6 * 7)"}}, "#);
    call.feed(r#"{"tool": "search", "arguments": {"queries": ["lighthouse"]}}]}"#);
    let (seen, out) = published(call).await;
    assert!(!out.is_error, "{out:?}");
    assert!(!seen.is_empty(), "{seen:?}");
    assert!(
        seen[0].starts_with("[{") && seen[0].contains("42") && !seen[0].contains("lighthouse"),
        "{seen:?}"
    );
    for s in &seen {
        assert!(out.content.starts_with(s.as_str()), "{s} / {}", out.content);
    }
    let mut call = reg.start("search").unwrap();
    call.feed(r#"{"queries": ["lighthouse lens", "volcano eruption"]}"#);
    let (seen, out) = published(call).await;
    assert!(
        seen.iter()
            .any(|s| s.contains("lighthouse") && !s.contains("volcano")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|s| out.content.starts_with(s.as_str())));
    let mut call = plan.start("plan").unwrap();
    call.feed(r#"{"steps": [{"tool": "nope", "arguments": {}}, {"tool": "python", "arguments": {"code": "1"}}]}"#);
    let (seen, out) = published(call).await;
    assert!(out.is_error && seen.is_empty(), "{seen:?} {out:?}");
}

/// python publishes what the program has printed while a later statement runs; every start
/// begins the final output. A program that fails publishes no whole result.
#[tokio::test]
async fn python_publishes_its_output_so_far() {
    let reg = registry_with(
        true,
        vec![Arc::new(python::Python::new(
            python::PythonLimits::default(),
        ))],
    );
    let mut call = reg.start("python").unwrap();
    let code = "print('loaded 3 tables: orders, refunds, customers')\nimport time\ntime.sleep(0.5)\nprint('done')";
    call.feed(&json!({ "code": code }).to_string());
    let (seen, out) = published(call).await;
    assert_eq!(
        out.content,
        "loaded 3 tables: orders, refunds, customers\ndone\n"
    );
    assert_eq!(seen[0], "loaded 3 tables: orders, refunds, customers\n");
    assert!(
        seen.iter().all(|s| out.content.starts_with(s.as_str())),
        "{seen:?}"
    );
    let mut call = reg.start("python").unwrap();
    call.feed(&json!({ "code": "print('é' * 3)\nraise ValueError('no')" }).to_string());
    let (seen, out) = published(call).await;
    assert!(out.is_error && out.content.starts_with("ééé\n"), "{out:?}");
    assert!(
        seen.iter().all(|s| out.content.starts_with(s.as_str())),
        "{seen:?}"
    );
}

/// A one-shot HTTP server on loopback that answers `status` with a body sent in `parts`, 0.3 s
/// apart.
async fn serve_parts(status: &'static str, parts: Vec<String>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf).await;
        let len: usize = parts.iter().map(String::len).sum();
        let head =
            format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            // The reader may stop early (a body past the cap).
            let _ = s.write_all(part.as_bytes()).await;
        }
    });
    format!("http://{addr}/")
}

#[tokio::test]
async fn http_get_fetches_allowed_urls_only() {
    let base = serve_parts("200 OK", vec!["hello from loopback".into()]).await;
    let tool = HttpGet::new(vec![base.clone()], Duration::from_secs(5));
    let reg = registry_with(true, vec![Arc::new(tool)]);
    let mut call = reg.start("http_get").unwrap();
    call.feed(&json!({"url": format!("{base}page")}).to_string());
    assert_eq!(call.finish().await, ToolOutput::ok("hello from loopback"));
    let mut call = reg.start("http_get").unwrap();
    call.feed(r#"{"url": "http://example.com/"}"#);
    let out = call.finish().await;
    assert!(
        out.is_error && out.content.contains("allow-list"),
        "{out:?}"
    );
}

/// http_get publishes a successful body's text as it arrives, cuts a long body at its cap,
/// and publishes nothing of an error's body (its result begins with the status).
#[tokio::test]
async fn http_get_publishes_the_body_so_far_and_stops_at_its_cap() {
    let fetch = |base: String| async move {
        let reg = registry_with(
            true,
            vec![Arc::new(HttpGet::new(
                vec![base.clone()],
                Duration::from_secs(5),
            ))],
        );
        let mut call = reg.start("http_get").unwrap();
        call.feed(&json!({ "url": base }).to_string());
        published(call).await
    };
    let parts = vec!["first half, ".to_string(), "second half".to_string()];
    let (seen, out) = fetch(serve_parts("200 OK", parts).await).await;
    assert_eq!(out, ToolOutput::ok("first half, second half"));
    assert_eq!(seen[0], "first half, ");
    let big = vec!["é".repeat(4 << 10), "x".repeat(1 << 20)];
    let (seen, out) = fetch(serve_parts("200 OK", big).await).await;
    let max = 16 << 10;
    assert_eq!(
        out.content,
        format!(
            "{}{}\n[truncated at {max} bytes]",
            "é".repeat(4 << 10),
            "x".repeat(max - (8 << 10))
        )
    );
    assert!(seen.iter().all(|s| out.content.starts_with(s.as_str())));
    let parts = vec!["not found, ".to_string(), "sorry".to_string()];
    let (seen, out) = fetch(serve_parts("404 Not Found", parts).await).await;
    assert!(
        out.is_error && out.content.ends_with("not found, sorry"),
        "{out:?}"
    );
    assert!(seen.is_empty(), "{seen:?}");
}

struct Crashes;

impl Tool for Crashes {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "crash".into(),
            description: None,
            parameters: json!({"type": "object"}),
        }
    }

    fn run(&self, _args: UnboundedReceiver<ArgEvent>, _prefix: ResultPrefix) -> ToolFuture {
        Box::pin(async { panic!("tool bug") })
    }
}

#[tokio::test]
async fn a_crashing_tool_gives_an_error_result() {
    let mut call = registry_with(true, vec![Arc::new(Crashes)])
        .start("crash")
        .unwrap();
    call.feed("{}");
    let out = call.finish().await;
    assert!(out.is_error && out.content.contains("crashed"), "{out:?}");
}
