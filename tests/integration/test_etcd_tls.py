"""etcd over TLS: a CA alone enables TLS (upstream needs key+cert too), and mutual TLS."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from flanneld.lab import wait_for
from lease.errors import ConfigError, StoreUnavailable
from lease.etcd_store import EtcdLeaseStore, EtcdSettings

from .conftest import _free_port, _require


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(where: Path) -> None:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "1", "-subj", "/CN=flanneld-test-ca", cwd=where)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                 "extendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        (where / f"{name}.ext").write_text(ext)
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}", cwd=where)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "1", "-extfile",
                f"{name}.ext", cwd=where)


@pytest.fixture(scope="module", params=["server-tls", "mutual-tls"])
def tls_etcd(request: pytest.FixtureRequest) -> Iterator[tuple[str, Path, bool]]:
    _require()
    pki = Path(tempfile.mkdtemp(prefix="flanneld-pki-"))
    make_pki(pki)
    mutual = request.param == "mutual-tls"
    client, peer = _free_port(), _free_port()
    url = f"https://127.0.0.1:{client}"
    log = (pki / "etcd.log").open("wb")
    args = ["etcd", "--name", "tls", "--data-dir", str(pki / "data"),
            "--listen-client-urls", url, "--advertise-client-urls", url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"tls=http://127.0.0.1:{peer}",
            "--cert-file", str(pki / "server.pem"), "--key-file", str(pki / "server.key")]
    if mutual:
        args += ["--client-cert-auth", "--trusted-ca-file", str(pki / "ca.pem")]
    proc = subprocess.Popen(args, stdout=log, stderr=log)
    ctl = ["etcdctl", f"--endpoints={url}", f"--cacert={pki / 'ca.pem'}",
           f"--cert={pki / 'client.pem'}", f"--key={pki / 'client.key'}"]
    try:
        wait_for("etcd with TLS", lambda: subprocess.run(
            [*ctl, "put", "/coreos.com/network/config", '{"Network":"10.5.0.0/16"}'],
            capture_output=True, check=False, env={"ETCDCTL_API": "3", "PATH": "/usr/bin"},
        ).returncode == 0, timeout=30, interval=0.2)
        yield url, pki, mutual
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(pki, ignore_errors=True)


@pytest.mark.parametrize("scheme", ["https", "http"])  # a CA alone means TLS either way
async def test_ca_alone_enables_tls(tls_etcd: tuple[str, Path, bool], scheme: str) -> None:
    url, pki, mutual = tls_etcd
    endpoint = url.replace("https", scheme)
    store = EtcdLeaseStore(EtcdSettings(endpoints=[endpoint], cafile=str(pki / "ca.pem")))
    try:
        if mutual:
            with pytest.raises(StoreUnavailable):  # the server wants a client certificate
                await store.get_config()
        else:
            assert await store.get_config() == b'{"Network":"10.5.0.0/16"}'
    finally:
        await store.close()


async def test_client_certificate(tls_etcd: tuple[str, Path, bool]) -> None:
    url, pki, _ = tls_etcd
    store = EtcdLeaseStore(EtcdSettings(
        endpoints=[url], cafile=str(pki / "ca.pem"), certfile=str(pki / "client.pem"),
        keyfile=str(pki / "client.key")))
    try:
        assert await store.get_config() == b'{"Network":"10.5.0.0/16"}'
    finally:
        await store.close()


async def test_plain_client_against_tls_etcd_fails_cleanly(
    tls_etcd: tuple[str, Path, bool],
) -> None:
    url, _, _ = tls_etcd
    store = EtcdLeaseStore(EtcdSettings(endpoints=[url.replace("https", "http")]))
    try:
        with pytest.raises(StoreUnavailable):
            await store.get_config()
    finally:
        await store.close()


def test_unreadable_or_half_client_credentials_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="-etcd-cafile: cannot read"):
        EtcdLeaseStore(EtcdSettings(cafile=str(tmp_path / "missing.pem")))
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(ConfigError, match="must be given together"):
        EtcdLeaseStore(EtcdSettings(cafile=str(tmp_path / "ca.pem"), certfile="c.pem"))


async def test_credentials_that_are_not_pem_certificates_are_config_errors(
        tmp_path: Path) -> None:
    """Caught at start with one line; gRPC would only complain on stderr at every try."""
    make_pki(tmp_path)
    ca, garbage = str(tmp_path / "ca.pem"), tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^-etcd-cafile: .*garbage.pem holds no PEM"):
        EtcdLeaseStore(EtcdSettings(cafile=str(garbage)))
    with pytest.raises(ConfigError, match=r"^-etcd-certfile/-etcd-keyfile: .* not a PEM"):
        EtcdLeaseStore(EtcdSettings(cafile=ca, certfile=str(garbage),
                                    keyfile=str(tmp_path / "client.key")))
    with pytest.raises(ConfigError, match=r"KEY_VALUES_MISMATCH|key values mismatch"):
        EtcdLeaseStore(EtcdSettings(cafile=ca, certfile=str(tmp_path / "client.pem"),
                                    keyfile=str(tmp_path / "server.key")))
    openssl("rsa", "-in", "client.key", "-aes128", "-passout", "pass:secret", "-out",
            "locked.key", cwd=tmp_path)
    with pytest.raises(ConfigError, match="unencrypted key"):
        EtcdLeaseStore(EtcdSettings(cafile=ca, certfile=str(tmp_path / "client.pem"),
                                    keyfile=str(tmp_path / "locked.key")))
    good = EtcdLeaseStore(EtcdSettings(cafile=ca, certfile=str(tmp_path / "client.pem"),
                                       keyfile=str(tmp_path / "client.key")))
    await good.close()
