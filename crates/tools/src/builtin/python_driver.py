"""tandem's python tool driver: runs code as it arrives, each top-level statement as soon as it
is known to be complete: a simple statement (an assignment, a call...) when its last line
arrives, a compound one (if, for, def, try...) when the next top-level line shows its block
is over, since an `else`, `except` or more of the body could still follow. Reads JSON lines on stdin:
{"line": "..."} or {"end": true}. Writes the program's stdout and stderr (merged), then the
value of a final expression. Exit status 1 after an exception. Limits: argv[1] CPU seconds,
argv[2] bytes of address space; network and process creation are refused by an audit hook."""
import ast
import json
import resource
import sys
import traceback

cpu, mem = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
sys.stderr = sys.stdout

REFUSED = ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
           "socket.gethostbyname", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn",
           "os.spawn", "os.fork", "os.forkpty", "pty.spawn")


def audit(event, _args):
    if event.startswith(REFUSED):
        raise PermissionError(f"{event} is not allowed in the python tool")


sys.addaudithook(audit)
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


try:
    main()
except BaseException:  # noqa: BLE001 - the traceback is the tool's result
    traceback.print_exc(limit=-3)
    sys.stdout.flush()
    sys.exit(1)
