"""deploy/container/Containerfile, built and run with podman when this
machine can.

Only the package registries are reachable here, so the two registry images
the Containerfile names cannot be pulled. The test builds the real file
without them:

- the build stage is replaced by the binary the suite already built
  (`--build-context build=DIR`, holding `out/castellan` stripped of debug
  symbols and an empty `out/data`), so the Rust build stage is NOT tested;
- the runtime base (distroless `cc`) is replaced by a local FROM-scratch
  image holding exactly the shared libraries `ldd` lists for that binary,
  plus `/etc/passwd` and `/etc/group` naming the user 65532, as distroless
  does.

Everything of the runtime stage is the file's own: the copies, the user, the
environment, the /data volume, the health check, entrypoint and command.
The image then runs: register, log in and check the session over HTTP, the
health check passes, the database lands in the volume, owned by 65532, and a
stop ends castellan cleanly. When podman is missing, cannot build, or cannot
run containers, the test is skipped with the reason, which also goes to
$CASTELLAN_TEST_REPORTS/container.txt so CI shows what happened.
"""

import base64
import os
import resource
import secrets
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path

import harness
import pytest
import requests

CONTAINERFILE = harness.ROOT / "deploy/container/Containerfile"


def note(text: str):
    print(text)
    reports = os.environ.get("CASTELLAN_TEST_REPORTS")
    if reports:
        with open(Path(reports) / "container.txt", "a") as f:
            f.write(text + "\n")


def skip(reason: str):
    note(f"container test SKIPPED: {reason}")
    pytest.skip(reason)


def podman(*args, runtime=None, timeout=600, check=False):
    cmd = ["podman"] + (["--runtime", runtime] if runtime else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-1500:]}")
    return r


def rlimit_args():
    # podman raises the open-file and process limits by default; a sandbox
    # without CAP_SYS_RESOURCE refuses that, so ask for what we have.
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[0], 4096)
    return ["--ulimit", f"nofile={nofile[0]}:{nofile[1]}", "--ulimit", f"nproc={nproc}:{nproc}"]


@pytest.fixture(scope="module")
def image(castellan_bin, tmp_path_factory):
    if not shutil.which("podman"):
        skip("podman is not installed (Debian package podman); the image was not built or run")
    tag = f"castellan-ops-{uuid.uuid4().hex[:8]}"
    work = tmp_path_factory.mktemp("container")
    base = work / "base"
    rootfs = base / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    ldd = subprocess.run(["ldd", castellan_bin], capture_output=True, text=True, check=True).stdout
    for lib in sorted({w for w in ldd.split() if w.startswith("/")}):
        dest = rootfs / lib.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, dest)  # follows the symlink: the real file under the linked name
    (rootfs / "etc/passwd").write_text("nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")
    (rootfs / "etc/group").write_text("nonroot:x:65532:\n")
    (base / "Containerfile").write_text("FROM scratch\nCOPY rootfs/ /\n")
    build = work / "build"
    (build / "out/data").mkdir(parents=True)
    if shutil.which("strip"):
        subprocess.run(["strip", "-o", str(build / "out/castellan"), castellan_bin], check=True)
    else:
        shutil.copy(castellan_bin, build / "out/castellan")
    runtime_image = f"localhost/{tag}-runtime:test"
    final = f"localhost/{tag}:test"
    r = podman("build", "-q", "-t", runtime_image, str(base))
    if r.returncode != 0:
        skip(f"podman cannot build images here: {r.stderr.strip()[-500:]}")
    try:
        r = podman(
            "build", "--format", "docker", "-f", str(CONTAINERFILE),
            "--build-context", f"build={build}",
            "--build-arg", f"RUNTIME_IMAGE={runtime_image}",
            "-t", final, str(harness.ROOT),
        )
        assert r.returncode == 0, f"building {CONTAINERFILE} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        yield final
    finally:
        podman("rmi", "-f", final, runtime_image)


@pytest.fixture(scope="module")
def runtime(image):
    """The OCI runtime that can start a container here, or a skip."""
    errors = []
    for candidate in ("crun", "runc"):
        if not shutil.which(candidate):
            continue
        r = podman("run", "--rm", "--network", "host", *rlimit_args(), "--health-interval", "disable",
                   "--entrypoint", "/usr/local/bin/castellan", image, "--version", runtime=candidate, timeout=120)
        if r.returncode == 0 and r.stdout.startswith("castellan "):
            note(f"container test: podman runs containers here with {candidate}")
            return candidate
        errors.append(f"{candidate}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    skip("the image was built but podman cannot run containers on this machine (" + "; ".join(errors) + ")")


def test_the_image_is_the_binary_alone_running_as_65532(image):
    cfg = podman("image", "inspect", image, "--format",
                 "{{.Config.User}}|{{json .Config.Volumes}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Healthcheck.Test}}",
                 check=True).stdout.strip()
    user, volumes, entrypoint, cmd, health = cfg.split("|")
    assert user == "65532:65532"
    assert '"/data"' in volumes
    assert entrypoint == '["/usr/local/bin/castellan"]' and cmd == '["serve"]'
    assert health == '["CMD","/usr/local/bin/castellan","health"]'
    # The file system: no shell anywhere, castellan executable, /data owned by 65532.
    name = f"ops-inspect-{uuid.uuid4().hex[:8]}"
    podman("create", "--name", name, image, check=True)
    try:
        export = subprocess.run(["podman", "export", name], capture_output=True, timeout=300, check=True).stdout
    finally:
        podman("rm", "-f", "-v", name)
    import io

    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        members = {m.name.lstrip("./").rstrip("/"): m for m in tar.getmembers()}
    shells = [n for n in members if Path(n).name in {"sh", "bash", "dash", "ash", "busybox"}]
    assert not shells, shells
    assert members["usr/local/bin/castellan"].mode & 0o111
    assert (members["data"].uid, members["data"].gid) == (65532, 65532)


def test_the_container_serves_register_and_login_and_stops_cleanly(image, runtime):
    port = harness.free_port()
    name = f"ops-run-{uuid.uuid4().hex[:8]}"
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    r = podman(
        "run", "-d", "--name", name, "--network", "host", *rlimit_args(),
        # periodic checks need systemd timers; the check itself is run below
        "--health-interval", "disable",
        "-e", f"CASTELLAN_LISTEN=127.0.0.1:{port}", "-e", f"CASTELLAN_SECRET_KEY={secret}",
        image, runtime=runtime, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "/health/live", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail("the container did not answer:\n" + podman("logs", name).stdout[-3000:])
        email = f"container-{uuid.uuid4().hex[:8]}@example.com"
        r = requests.post(base + "/v1/registration", json={"email": email, "password": harness.PASSWORD}, timeout=30)
        assert r.status_code == 201, r.text
        r = requests.post(base + "/v1/login", json={"email": email, "password": harness.PASSWORD}, timeout=30)
        assert r.status_code == 200, r.text
        token = r.json()["session_token"]
        r = requests.get(base + "/v1/session", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and r.json()["user"]["email"] == email
        # the image's HEALTHCHECK (castellan health) passes
        r = podman("healthcheck", "run", name, runtime=runtime, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        # the SQLite database is in the /data volume, owned by the image's user
        source = podman("inspect", name, "--format", "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Source}}{{end}}{{end}}",
                        check=True).stdout.strip()
        db = Path(source) / "castellan.db"
        assert db.exists() and db.stat().st_uid == 65532, source
        # SIGTERM (STOPSIGNAL): castellan finishes and exits 0 before podman's kill
        podman("stop", "-t", "20", name, runtime=runtime, check=True, timeout=60)
        code = podman("inspect", name, "--format", "{{.State.ExitCode}}", check=True).stdout.strip()
        assert code == "0", podman("logs", name).stdout[-2000:]
        note("container test: built deploy/container/Containerfile (runtime stage on a local base of the "
             "binary's own libraries, build stage replaced by the built binary), ran it, registered, "
             "logged in, health check passed, stopped cleanly")
    finally:
        podman("rm", "-f", "-v", name, runtime=runtime)
