"""Real cluster services on 127.0.0.1 for the cluster tests: a one-node SLURM cluster, PostgreSQL and an
MLflow tracking server on it, each started here and stopped by the PIDs recorded in a work folder.

    python tests/cluster/services.py start DIR   # prints `export SLURM_CONF=... OPTBENCH_TEST_PG_URL=...` lines
    python tests/cluster/services.py stop DIR    # stops what `start DIR` started, nothing else

Everything is real (Debian's slurm-wlm and munge, PostgreSQL's initdb/pg_ctl, `mlflow server`): the tests check the
cluster path against what a cluster runs, not against mocks. Each cluster gets its own munged (own socket and key
copy) so several work folders can run side by side on one machine and stopping one never touches another's.
SLURM uses its usual ports 6817/6818 when they are free and two free ports otherwise. Every wait polls with a
timeout; every PID is written to DIR/pids/<name>.pid before anything waits on it.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

SLURM_PACKAGES = ["slurm-wlm", "munge"]  # Debian's SLURM 22.05 and its authentication daemon
SLURM_PORTS = (6817, 6818)  # slurmctld, slurmd: SLURM's defaults, used when free


class ServiceError(RuntimeError):
    """A service did not start; the message says which, why, and which log to read."""


# ---------------------------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A port nobody listens on now (the kernel picks it when binding port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    """Poll `check` every 0.2 s until it is true; after `timeout` seconds fail with the log's tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = ""
    if log is not None and log.exists():
        tail = "\n--- last lines of " + str(log) + " ---\n" + "\n".join(log.read_text().splitlines()[-20:])
    raise ServiceError(f"{what} did not happen within {timeout:.0f} s{tail}")


def _pids_dir(workdir: Path) -> Path:
    path = Path(workdir) / "pids"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _record(workdir: Path, name: str, pid: int, group: bool = False) -> None:
    """Write the PID (prefixed with 'g' for a process group) before waiting on it, so stop_all finds it."""
    (_pids_dir(workdir) / f"{name}.pid").write_text(f"{'g' if group else ''}{pid}\n")


def _read_pid(path: Path, timeout: float = 10.0) -> int:
    """A daemon's own PID file, which it writes a moment after it forks."""
    wait_for(lambda: path.exists() and path.read_text().strip().isdigit(), timeout, f"PID file {path}")
    return int(path.read_text().strip())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of this process is dead for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# SLURM (with its own munged)


def ensure_slurm_packages() -> None:
    """Install slurm-wlm and munge when missing (these machines run as root; a cluster user already has SLURM)."""
    if all(shutil.which(p, path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", "")) for p in ("slurmctld", "munged")):
        return
    if os.geteuid() != 0:
        raise ServiceError(
            "slurmctld and munged are not installed and this user is not root, so they cannot be installed here. "
            "Install them once with `sudo apt-get install -y slurm-wlm munge` (Debian/Ubuntu), then run again."
        )
    subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True, timeout=300)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", *SLURM_PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if done.returncode != 0:
        raise ServiceError(f"apt-get install {' '.join(SLURM_PACKAGES)} failed:\n{done.stderr[-2000:]}")


def _start_munge(workdir: Path) -> Path:
    """A private munged for this cluster: its own socket, a copy of the machine's key, its own PID file."""
    mdir = Path(workdir) / "munge"
    mdir.mkdir(parents=True, exist_ok=True)
    mdir.chmod(0o755)  # munged refuses a socket folder that others may write to
    key = mdir / "munge.key"
    if not key.exists():
        system_key = Path("/etc/munge/munge.key")
        if system_key.exists():
            shutil.copyfile(system_key, key)
        else:  # a fresh install without a key: make one (munge only needs the daemons to share it)
            key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    sock = mdir / "munge.socket"
    pidfile = mdir / "munged.pid"
    log = mdir / "munged.log"
    # munged refuses to run as root without --force; the private socket keeps it away from any system munged
    _run(
        [
            _sbin("munged"),
            "--force",
            f"--socket={sock}",
            f"--key-file={key}",
            f"--pid-file={pidfile}",
            f"--log-file={log}",
            f"--seed-file={mdir / 'munged.seed'}",
        ]
    )
    _record(workdir, "munged", _read_pid(pidfile))
    wait_for(sock.exists, 10, "munged's socket", log)
    return sock


def _sbin(name: str) -> str:
    found = shutil.which(name, path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
    if found is None:
        raise ServiceError(f"{name} is not installed: run `apt-get install -y {' '.join(SLURM_PACKAGES)}`")
    return found


def slurm_conf_text(sdir: Path, munge_socket: Path, ports: tuple[int, int]) -> str:
    """The slurm.conf verified in FACTS.md: every port on loopback, every state file in this cluster's folder."""
    host = socket.gethostname()
    cpus = os.cpu_count() or 1
    mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    lines = {
        "ClusterName": "local",
        "SlurmctldHost": f"{host}(127.0.0.1)",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "AuthType": "auth/munge",
        "AuthInfo": f"socket={munge_socket}",
        "CredType": "cred/munge",
        "MailProg": "/bin/true",
        "CommunicationParameters": "NoCtldInAddrAny,NoInAddrAny",
        "SlurmctldPort": ports[0],
        "SlurmdPort": ports[1],
        "SrunPortRange": "60001-60100",
        "StateSaveLocation": sdir / "state",
        "SlurmdSpoolDir": sdir / "spool",
        "SlurmctldPidFile": sdir / "slurmctld.pid",
        "SlurmdPidFile": sdir / "slurmd.pid",
        "SlurmctldLogFile": sdir / "slurmctld.log",
        "SlurmdLogFile": sdir / "slurmd.log",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "AccountingStorageType": "accounting_storage/none",
        "JobCompType": "jobcomp/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core",
        "MpiDefault": "none",
        "ReturnToService": 2,
        "SchedulerType": "sched/backfill",
        "SchedulerParameters": "sched_interval=1",
    }
    text = "".join(f"{k}={v}\n" for k, v in lines.items())
    text += f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={max(mem_mb - 1024, 1000)} State=UNKNOWN\n"
    text += "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
    return text


def start_slurm(workdir: Path, timeout: float = 60) -> dict[str, str]:
    """Start munged, slurmctld and slurmd for a one-node cluster; return the environment its clients need."""
    ensure_slurm_packages()
    if os.geteuid() != 0:  # slurmd starts every job's processes as the job's user, which needs root
        raise ServiceError(
            "the local test cluster runs SLURM's daemons (slurmctld, slurmd) as root, and this user is not root: "
            "run the cluster tests as root (CI and the development machines do), or on a real cluster."
        )
    sdir = Path(workdir) / "slurm"
    for sub in ("state", "spool"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    munge_socket = _start_munge(workdir)
    ports = SLURM_PORTS if all(_port_free(p) for p in SLURM_PORTS) else (free_port(), free_port())
    conf = sdir / "slurm.conf"
    conf.write_text(slurm_conf_text(sdir, munge_socket, ports))
    env = {"SLURM_CONF": str(conf)}
    full_env = {**os.environ, **env}
    _run([_sbin("slurmctld"), "-i"], env=full_env)  # daemonises; -i ignores stale state from a reused folder
    _record(workdir, "slurmctld", _read_pid(sdir / "slurmctld.pid"))
    _run([_sbin("slurmd"), "-N", socket.gethostname()], env=full_env)
    _record(workdir, "slurmd", _read_pid(sdir / "slurmd.pid"))

    def node_idle() -> bool:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=full_env, timeout=10)
        return out.returncode == 0 and out.stdout.strip() == "idle"

    wait_for(node_idle, timeout, "the SLURM node becoming idle", sdir / "slurmctld.log")
    return env


def cancel_jobs(env: dict[str, str]) -> None:
    """scancel every job of this cluster (tests submit jobs that may still run or stay PENDING forever)."""
    subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env={**os.environ, **env}, timeout=30)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL


def start_postgres(workdir: Path, port: int | None = None, timeout: float = 60) -> str:
    """initdb a fresh cluster and start it on 127.0.0.1; return a SQLAlchemy URL of its `optbench` database.

    The data folder lives in its own /tmp folder owned by `postgres` (pytest's folders are private to root, and
    PostgreSQL refuses to run as root); its path is recorded in the work folder so stop_all removes it.
    """
    port = port or free_port()
    initdb, pg_ctl, createdb = (_postgres_bin(name) for name in ("initdb", "pg_ctl", "createdb"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data = Path(tempfile.mkdtemp(prefix="optbench-pg-"))
    (Path(workdir) / "postgres.datadir").write_text(str(data))
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    _run([*as_postgres, initdb, "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8"])
    log = data / "server.log"
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off"
    _run([*as_postgres, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", str(int(timeout)), "-o", options, "start"])
    pid = int((data / "postmaster.pid").read_text().split()[0])
    _record(workdir, "postgres", pid)
    _run([*as_postgres, createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optbench"])
    return f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optbench"


def _postgres_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else in Debian's versioned folder (not on PATH by default)."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found is None:
        raise ServiceError(
            f"PostgreSQL's {name} is not installed: install the server (Debian: `apt-get install -y postgresql`) "
            "or put its bin folder on PATH, then run again."
        )
    return found


def create_database(url: str, name: str) -> str:
    """A fresh database on the same server (one per test keeps Optuna studies and MLflow stores apart)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


# ---------------------------------------------------------------------------------------------------------------
# MLflow tracking server


def start_mlflow_server(workdir: Path, backend_url: str, port: int | None = None, timeout: float = 120) -> str:
    """`mlflow server` on the given store, artifacts proxied into DIR/mlflow-artifacts; return its URI.

    It starts uvicorn, a job runner and huey workers, so it runs in its own session (setsid) and stop_all
    stops the whole process group.
    """
    port = port or free_port()
    artifacts = Path(workdir) / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    log = Path(workdir) / "mlflow-server.log"
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which("mlflow")
    if mlflow is None:
        raise ServiceError("the `mlflow` command is not installed next to this Python")
    cmd = [mlflow, "server", "--backend-store-uri", backend_url, "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    _record(workdir, "mlflow-server", proc.pid, group=True)
    uri = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise ServiceError(f"mlflow server exited with {proc.returncode}; see {log}")
        try:
            with urllib.request.urlopen(uri + "/health", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout, "the MLflow tracking server answering /health", log)
    return uri


# ---------------------------------------------------------------------------------------------------------------
# stopping


def _stop(pid: int, group: bool, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> None:
    """Send `sig` (to the whole group for a group), then SIGKILL if it still runs after `timeout` seconds."""
    kill = os.killpg if group else os.kill
    try:
        kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) and not (group and _group_alive(pid)):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        kill(pid, signal.SIGKILL)


def _group_alive(pgid: int) -> bool:
    """Whether a live (non-zombie) process is left in the group; killpg(pgid, 0) also counts zombies, such as
    the server this very process started and has not reaped."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


STOP_ORDER = ["mlflow-server", "postgres", "slurmd", "slurmctld", "munged"]


def stop_all(workdir: Path) -> list[str]:
    """Stop everything `start_*` recorded in this work folder (and only that); return the names stopped."""
    pids = _pids_dir(workdir)
    conf = Path(workdir) / "slurm" / "slurm.conf"
    if conf.exists() and (pids / "slurmctld.pid").exists():
        subprocess.run(["scancel", "--full", "--user", str(os.getuid())], env={**os.environ, "SLURM_CONF": str(conf)},
                       capture_output=True, timeout=30)  # fmt: skip
    names = sorted(p.stem for p in pids.glob("*.pid"))
    names.sort(key=lambda n: STOP_ORDER.index(n) if n in STOP_ORDER else -1)
    stopped = []
    for name in names:
        text = (pids / f"{name}.pid").read_text().strip()
        group = text.startswith("g")
        # PostgreSQL answers SIGINT with a fast shutdown (SIGTERM would wait for its clients to leave)
        sig = signal.SIGINT if name == "postgres" else signal.SIGTERM
        # the MLflow server's state is in PostgreSQL: its many workers get 10 s, not 30, before SIGKILL
        _stop(int(text.lstrip("g")), group, sig, timeout=10 if group else 30)
        (pids / f"{name}.pid").unlink()
        stopped.append(name)
    datadir = Path(workdir) / "postgres.datadir"
    if datadir.exists():
        shutil.rmtree(datadir.read_text().strip(), ignore_errors=True)
        datadir.unlink()
    return stopped


def start_all(workdir: Path) -> dict[str, str]:
    """SLURM, PostgreSQL and a tracking server on it; the environment variables the tests and users read."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        env = start_slurm(workdir)
        pg = start_postgres(workdir)
        env["OPTBENCH_TEST_PG_URL"] = pg
        env["MLFLOW_TRACKING_URI"] = start_mlflow_server(workdir, create_database(pg, "mlflow"))
    except BaseException:
        stop_all(workdir)
        raise
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("dir", type=Path, help="work folder: configs, logs, data and the PIDs of what started")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            started = time.monotonic()
            env = start_all(args.dir)
            for key, value in env.items():
                print(f"export {key}={value}")
            print(f"# started in {time.monotonic() - started:.0f} s; stop with: {sys.argv[0]} stop {args.dir}",
                  file=sys.stderr)  # fmt: skip
        else:
            print("stopped: " + (", ".join(stop_all(args.dir.resolve())) or "nothing"), file=sys.stderr)
    except (ServiceError, OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        detail = getattr(err, "stderr", None) or ""
        print(f"error: {err}\n{detail}".rstrip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
