"""tandem's python tool driver: runs code as it arrives, each top-level statement as soon as it
is known to be complete: a simple statement (an assignment, a call...) when its last line
arrives, a compound one (if, for, def, try...) when the next top-level line shows its block
is over, since an `else`, `except` or more of the body could still follow.

It runs as a fork server (argv: socket path, CPU seconds, bytes of address space, nice
increment): started once, it listens on the socket and forks one child per connection, so a
call costs a fork of this warm interpreter (about 2.6 ms of CPU) instead of starting Python
(about 34 ms, taken from the decode when the call runs alongside it). On stdout it writes
`ready`, then `PID STATUS` (the raw wait status) for each child that ends; it exits when its
stdin closes, removing the socket and its directory. A child writes its pid as the first line
on its connection, applies the limits and the audit hook (network and process creation
refused), then reads JSON lines: {"line": "..."} or {"end": true}, and writes the program's
stdout and stderr (merged), then the value of a final expression. Exit status 1 after an
exception."""
import ast
import io
import json
import os
import resource
import selectors
import signal
import socket
import sys
import traceback

REFUSED = ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
           "socket.gethostbyname", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
           "os.spawn", "os.fork", "os.forkpty", "pty.spawn")


def audit(event, _args):
    if event.startswith(REFUSED):
        raise PermissionError(f"{event} is not allowed in the python tool")


ENV = {"__name__": "__main__"}
CONTINUATION = ("else", "elif", "except", "finally", ")", "]", "}", "case")


COMPOUND = (ast.If, ast.For, ast.AsyncFor, ast.While, ast.With, ast.AsyncWith, ast.Try,
            ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef) + \
    tuple(getattr(ast, n) for n in ("Match", "TryStar") if hasattr(ast, n))
NOTHING = object()


def run(lines):
    """Runs a chunk of statements; returns the value of its last statement when that is an
    expression (printed only if no statement follows it), else NOTHING."""
    tree = ast.parse("\n".join(lines), "<tool>")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<tool>", "exec"), ENV)
    value = NOTHING if last is None else eval(compile(last, "<tool>", "eval"), ENV)
    sys.stdout.flush()
    return value


def starts_statement(line):
    return line.strip() and not line[0].isspace() and not line.lstrip().startswith(CONTINUATION) \
        and not line.lstrip().startswith("#")


def parse(lines):
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def ends_simple(lines):
    """True when the lines are complete statements and the last is a simple one: nothing
    that comes after can belong to it."""
    tree = parse(lines)
    return tree is not None and bool(tree.body) and not isinstance(tree.body[-1], COMPOUND)


def main():
    pending, value = [], NOTHING
    for raw in sys.stdin:
        msg = json.loads(raw)
        if msg.get("end"):
            break
        line = msg["line"]
        if pending and starts_statement(line) and parse(pending) is not None:
            value = run(pending)
            pending = []
        pending.append(line)
        if ends_simple(pending):
            value = run(pending)
            pending = []
    if pending and parse(pending) is not None and not parse(pending).body:
        pending = []  # only comments or blank lines: the last statement's value stands
    if pending:
        value = run(pending)
    if value is not NOTHING and value is not None:
        print(repr(value))
        sys.stdout.flush()


def child(conn, cpu, mem, nice):
    """In the forked child: the connection becomes stdin, stdout and stderr; then the limits,
    and the program."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in (0, 1, 2):
        os.dup2(conn.fileno(), fd)
    conn.close()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r"), encoding="utf-8")
    sys.stdout = sys.stderr = io.TextIOWrapper(io.FileIO(1, "w"), encoding="utf-8",
                                               errors="backslashreplace", write_through=True)
    print(os.getpid())
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    os.nice(nice)
    sys.addaudithook(audit)
    try:
        main()
    except BaseException:  # noqa: BLE001 - the traceback is the tool's result
        traceback.print_exc(limit=-3)
        sys.stdout.flush()
        os._exit(1)
    os._exit(0)


def reap():
    """Reports every ended child as `PID STATUS` on stdout."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        print(pid, status, flush=True)


def remove(path):
    """The socket and its private directory, also when the server that made them was killed."""
    for f in (os.unlink, os.rmdir):
        try:
            f(path)
        except OSError:
            pass
        path = os.path.dirname(path)


def serve(path, cpu, mem, nice):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(64)
    # SIGCHLD only wakes the loop (through the wakeup pipe); children are reaped and reported
    # in the loop, never inside a handler, whose prints could interleave with the loop's.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ)
    events.register(sys.stdin, selectors.EVENT_READ)
    events.register(wake_r, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in events.select():
            if key.fileobj is sys.stdin:
                if not os.read(0, 4096):
                    remove(path)
                    return
            elif key.fileobj == wake_r:
                os.read(wake_r, 4096)
                reap()
            else:
                conn, _ = listener.accept()
                if os.fork() == 0:
                    signal.set_wakeup_fd(-1)
                    for f in (events, listener):
                        f.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    child(conn, cpu, mem, nice)
                conn.close()


serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
