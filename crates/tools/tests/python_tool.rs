//! The `python` tool through the runtime: statements run while the arguments are still being
//! decoded (and only at the end with partial execution off), the final expression's value,
//! limits (CPU, memory, output, wall time), refused network and processes, a crash, and a
//! cancelled call whose process is gone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tandem_tools::builtin::python::{Python, PythonLimits};
use tandem_tools::runtime::{Registry, Running, ToolOutput};

fn registry(partial: bool, limits: PythonLimits) -> Registry {
    let mut r = Registry::new(partial);
    r.add(Arc::new(Python::new(limits)));
    r
}

/// The arguments JSON of `code`, split so that `pieces[0]` holds the first `lines` lines.
fn args_split(code: &str, lines: usize) -> (String, String) {
    let text = json!({ "code": code }).to_string();
    let first: String = code.split('\n').take(lines).collect::<Vec<_>>().join("\n") + "\n";
    let cut = json!({ "code": first }).to_string().len() - 2; // without the closing `"}`
    (text[..cut].to_string(), text[cut..].to_string())
}

async fn run(code: &str, limits: PythonLimits) -> ToolOutput {
    let mut call = registry(true, limits).start("python").unwrap();
    call.feed(&json!({ "code": code }).to_string());
    call.finish().await
}

fn marker(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tandem-py-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[tokio::test]
async fn statements_run_before_the_arguments_are_complete() {
    for partial in [true, false] {
        let m = marker(&format!("partial-{partial}"));
        let code = format!(
            "open({:?}, 'w').write('ran')\nx = 6\nx * 7",
            m.display().to_string()
        );
        let (head, tail) = args_split(&code, 2);
        let mut call: Running = registry(partial, PythonLimits::default())
            .start("python")
            .unwrap();
        call.feed(&head);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(
            m.exists(),
            partial,
            "first statement ran early only with partial execution"
        );
        call.feed(&tail);
        let out = call.finish().await;
        assert_eq!(out, ToolOutput::ok("42\n"));
        assert!(m.exists());
    }
}

/// `finish_timed` reports how long the result came after the arguments were complete: the
/// whole statement lazily, almost nothing when the statement already ran while the rest of
/// the arguments were being "decoded" (the test's pause).
#[tokio::test]
async fn wait_after_the_arguments_is_what_partial_execution_saves() {
    // `time.sleep(0.5)` runs as soon as its line is complete (with partial execution on).
    let code = "import time\ntime.sleep(0.5)\nx = 1\n'done'";
    let mut waits = Vec::new();
    for partial in [false, true] {
        let (head, tail) = args_split(code, 3);
        let mut call = registry(partial, PythonLimits::default())
            .start("python")
            .unwrap();
        call.feed(&head);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        call.feed(&tail);
        let done = call.finish_timed().await;
        assert_eq!(done.output, ToolOutput::ok("'done'\n"));
        waits.push(done.wait);
    }
    assert!(
        waits[0] >= Duration::from_millis(500),
        "lazy waits the sleep: {waits:?}"
    );
    assert!(
        waits[1] < Duration::from_millis(400),
        "partial slept meanwhile: {waits:?}"
    );
}

/// A simple statement runs as soon as its line is complete, not when the next line arrives:
/// the sleep below is over before the last line is "decoded".
#[tokio::test]
async fn a_simple_statement_runs_when_its_line_is_complete() {
    let code = "import time\ntime.sleep(0.5)\n'done'";
    let (head, tail) = args_split(code, 2);
    let mut call = registry(true, PythonLimits::default())
        .start("python")
        .unwrap();
    call.feed(&head);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    call.feed(&tail);
    let done = call.finish_timed().await;
    assert_eq!(done.output, ToolOutput::ok("'done'\n"));
    assert!(done.wait < Duration::from_millis(400), "{:?}", done.wait);
}

/// A compound statement waits for the next top-level line (an `else` may still follow), and
/// only the program's last statement has its value printed.
#[tokio::test]
async fn blocks_wait_for_their_end_and_only_the_last_value_prints() {
    let code = "for i in range(2):\n    print(i)\nelse:\n    print('e')\n";
    let (head, tail) = args_split(code, 2);
    let mut call = registry(true, PythonLimits::default())
        .start("python")
        .unwrap();
    call.feed(&head);
    tokio::time::sleep(Duration::from_millis(800)).await;
    call.feed(&tail);
    assert_eq!(call.finish().await, ToolOutput::ok("0\n1\ne\n"));
    let cases = [
        ("1 + 1\nx = 2\n", ""),
        ("x = 6\nx * 7\n", "42\n"),
        ("x = 6\nx * 7\n# the answer\n\n", "42\n"),
        ("x = 6\nx * 7\nprint('after')", "after\n"),
        ("def f():\n    return 3\n\nf()", "3\n"),
    ];
    for (code, want) in cases {
        assert_eq!(
            run(code, PythonLimits::default()).await,
            ToolOutput::ok(want),
            "{code:?}"
        );
    }
}

/// The child runs at the server's priority plus `nice` (`--tool-nice`) and starts without
/// `site` (no site-packages, no `.pth` hooks).
#[tokio::test]
async fn runs_at_the_given_priority_without_site() {
    let limits = PythonLimits {
        nice: 10,
        ..PythonLimits::default()
    };
    let out = run(
        "import os, sys\nprint(os.nice(0), 'site' in sys.modules)",
        limits,
    )
    .await;
    // SAFETY: getpriority(2) only reads this process's nice value (the child's is relative).
    let base = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    let want = (base + 10).min(19);
    assert_eq!(out, ToolOutput::ok(format!("{want} False\n")));
}

#[tokio::test]
async fn prints_errors_and_limits() {
    let quick = PythonLimits {
        cpu_seconds: 1,
        memory_bytes: 256 << 20,
        wall_seconds: 10.0,
        max_output_bytes: 1000,
        ..PythonLimits::default()
    };
    let out = run(
        "for i in range(3):\n    print(i)\nprint('done')",
        quick.clone(),
    )
    .await;
    assert_eq!(out, ToolOutput::ok("0\n1\n2\ndone\n"));
    let out = run(
        "x = 1\nraise ValueError('bad input')\nprint('never')",
        quick.clone(),
    )
    .await;
    assert!(
        out.is_error
            && out.content.contains("ValueError: bad input")
            && !out.content.contains("never"),
        "{out:?}"
    );
    let out = run("while True:\n    pass", quick.clone()).await;
    assert!(out.is_error && out.content.contains("killed"), "{out:?}");
    let out = run("b = bytearray(4 * 10**9)", quick.clone()).await;
    assert!(
        out.is_error && out.content.contains("MemoryError"),
        "{out:?}"
    );
    let out = run("print('x' * 10**6)", quick.clone()).await;
    assert!(
        out.is_error && out.content.contains("truncated at 1000 bytes"),
        "{out:?}"
    );
    let out = run(
        "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        quick.clone(),
    )
    .await;
    assert!(
        out.is_error && out.content.contains("PermissionError"),
        "{out:?}"
    );
    let out = run("import subprocess\nsubprocess.run(['true'])", quick.clone()).await;
    assert!(
        out.is_error && out.content.contains("not allowed"),
        "{out:?}"
    );
    let out = run("import os\nos._exit(3)", quick.clone()).await;
    assert!(out.is_error, "{out:?}");
    let slow = PythonLimits {
        wall_seconds: 1.0,
        ..quick
    };
    let out = run("import time\ntime.sleep(5)", slow).await;
    assert!(out.is_error && out.content.contains("timed out"), "{out:?}");
}

/// A call whose program wrote its pid and sleeps a minute; `complete`: its arguments are
/// complete too. Returns the call and the pid.
async fn sleeping_call(name: &str, complete: bool) -> (Running, String) {
    let m = marker(name);
    let code = format!(
        "import os, time\nopen({:?}, 'w').write(str(os.getpid()))\ntime.sleep(60)\nx = 1",
        m.display().to_string()
    );
    let (head, tail) = args_split(&code, 3);
    let mut call = registry(true, PythonLimits::default())
        .start("python")
        .unwrap();
    call.feed(&head);
    if complete {
        call.feed(&tail);
    }
    let mut pid = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        pid = std::fs::read_to_string(&m).unwrap_or_default();
        if !pid.is_empty() {
            break;
        }
    }
    assert!(!pid.is_empty(), "the program started");
    (call, pid)
}

async fn assert_gone(pid: &str, when: &str) {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    assert!(!alive, "process {pid} still running after {when}");
}

#[tokio::test]
async fn a_cancelled_call_kills_its_process() {
    let (call, pid) = sleeping_call("pid", false).await;
    drop(call);
    assert_gone(&pid, "the call was dropped").await;
}

/// The server awaits a finished turn's calls with `finish()`; a cancel drops that future.
#[tokio::test]
async fn a_call_cancelled_while_its_result_is_awaited_kills_its_process() {
    let (call, pid) = sleeping_call("pid-awaited", true).await;
    let waiting = tokio::spawn(call.finish());
    tokio::time::sleep(Duration::from_millis(200)).await;
    waiting.abort();
    assert_gone(&pid, "the awaiting task was aborted").await;
}

#[tokio::test]
async fn arguments_that_end_early_are_an_error() {
    let mut call = registry(true, PythonLimits::default())
        .start("python")
        .unwrap();
    call.feed("{\"code\": \"print(1)\\n");
    call.feed("]]]");
    let out = call.finish().await;
    assert!(out.is_error, "{out:?}");
}

/// One call on `r`: its output.
async fn call_on(r: &Registry, code: &str) -> ToolOutput {
    let mut call = r.start("python").unwrap();
    call.feed(&json!({ "code": code }).to_string());
    call.finish().await
}

/// Calls are forked from one warm interpreter per tool (not started afresh), each starts
/// with a clean namespace, and a fork server that died is replaced by the next call; dropping
/// the tool ends its server.
#[tokio::test]
async fn calls_fork_from_one_server_that_is_replaced_when_it_dies() {
    let r = registry(true, PythonLimits::default());
    let parent = |out: ToolOutput| {
        assert!(!out.is_error, "{out:?}");
        out.content.trim().to_string()
    };
    let first = parent(call_on(&r, "import os\nsecret = 1\nos.getppid()").await);
    let second = parent(call_on(&r, "import os\nos.getppid()").await);
    assert_eq!(first, second, "both calls forked by the same server");
    assert_ne!(
        first,
        std::process::id().to_string(),
        "not spawned by the test"
    );
    let out = call_on(&r, "secret").await;
    assert!(out.is_error && out.content.contains("NameError"), "{out:?}");

    // SAFETY: kill(2) on the fork server's pid, which the calls above reported.
    unsafe { libc::kill(first.parse().unwrap(), libc::SIGKILL) };
    assert_gone(&first, "the fork server was killed").await;
    let third = parent(call_on(&r, "import os\nos.getppid()").await);
    assert_ne!(third, first, "a new server");
    drop(r);
    assert_gone(&third, "the tool was dropped").await;
}

/// Many calls ending at once on one server: each gets its own output and exit status (the
/// server reports children that end together without mixing their lines up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_ending_together_each_get_their_own_result() {
    let limits = PythonLimits {
        wall_seconds: 10.0,
        ..PythonLimits::default()
    };
    let r = Arc::new(registry(true, limits));
    for round in 0..8 {
        let calls = (0..24).map(|i| {
            let r = r.clone();
            let code = if i % 3 == 0 {
                format!("raise SystemExit({i})")
            } else {
                format!("import time\ntime.sleep(0.3)\n{i} * {round}")
            };
            tokio::spawn(async move { (i, call_on(&r, &code).await) })
        });
        for c in calls.collect::<Vec<_>>() {
            let (i, out) = c.await.unwrap();
            if i % 3 == 0 {
                let exited = out.content.contains(&format!("SystemExit: {i}"));
                assert!(out.is_error && exited, "call {i}: {out:?}");
            } else {
                assert_eq!(out, ToolOutput::ok(format!("{}\n", i * round)), "call {i}");
            }
        }
    }
}

/// A fork server whose stdin closes (the tandem process that started it died without
/// cleaning up) exits and removes its socket and directory.
#[test]
fn a_fork_server_left_alone_exits_and_removes_its_socket() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let dir = std::env::temp_dir().join(format!("tandem-py-orphan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let driver = concat!(env!("CARGO_MANIFEST_DIR"), "/src/builtin/python_driver.py");
    let mut server = Command::new("python3")
        .args(["-I", "-S", "-u", driver])
        .arg(dir.join("fork.sock"))
        .args(["10", "536870912", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    assert!(dir.join("fork.sock").exists());
    drop(server.stdin.take());
    assert!(server.wait().unwrap().success());
    assert!(!dir.exists(), "{} left behind", dir.display());
}
