"""Authenticated connections: Ensemble's client and worker reach the dev server through a
TLS-terminating proxy (nginx from Debian's packages) that demands a client certificate; a client
without the right certificate gets a one-line error from the CLI.

Needs nginx (apt-get install -y nginx-light; .ci/run installs it); without it the tests fail, saying so. nginx
rather than stunnel: gRPC clients require HTTP/2 negotiated by ALPN, which stunnel does not offer."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ensemble.runtime import server
from tests.conftest import run_cli

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


@pytest.fixture(autouse=True)
def _nginx_present() -> None:
    # No silent skip: a machine without nginx fails these tests, saying what to install.
    assert NGINX is not None, "these tests need nginx from Debian: apt-get install -y nginx-light (.ci/run does)"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str, key, issuer: str, issuer_key, *, ca: bool = False, server_cert: bool = False
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server_cert else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server_cert:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key) -> tuple[Path, Path]:
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pem.chmod(0o600)
    return crt, pem


@pytest.fixture
def pki(tmp_path) -> dict[str, Path]:
    """A CA, the proxy's server certificate, a client certificate from the CA and one from another CA."""
    ca_key, rogue_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("ensemble test CA", ca_key, "ensemble test CA", ca_key, ca=True)
    rogue_ca = _cert("rogue CA", rogue_key, "rogue CA", rogue_key, ca=True)
    out: dict[str, Path] = {}
    out["ca"], _ = _write(tmp_path, "ca", ca, ca_key)
    for name, issuer, issuer_key, is_server in (
        ("server", ca, ca_key, True),
        ("client", ca, ca_key, False),
        ("rogue", rogue_ca, rogue_key, False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(
            f"{name}.test", key, issuer.subject.rfc4514_string().removeprefix("CN="), issuer_key, server_cert=is_server
        )
        out[f"{name}_crt"], out[f"{name}_key"] = _write(tmp_path, name, cert, key)
    return out


API_KEY = "ens-test-" + os.urandom(12).hex()


def _server_block(port: int, pki: dict[str, Path], upstream: str, *, mtls: bool) -> str:
    client = f"  ssl_client_certificate {pki['ca']};\n  ssl_verify_client on;\n" if mtls else ""
    gate = "" if mtls else f'if ($http_authorization != "Bearer {API_KEY}") {{ return 403; }} '
    return (
        f" server {{\n  listen 127.0.0.1:{port} ssl http2;\n"
        f"  ssl_certificate {pki['server_crt']};\n  ssl_certificate_key {pki['server_key']};\n{client}"
        "  ssl_protocols TLSv1.2 TLSv1.3;\n  client_max_body_size 0;\n  grpc_read_timeout 300s;\n  grpc_send_timeout 300s;\n"
        f"  location / {{ {gate}grpc_pass grpc://{upstream}; }}\n }}\n"
    )


@pytest.fixture
def proxies(dev_server, pki, tmp_path) -> Iterator[dict[str, str]]:
    """nginx in front of the dev server on two free loopback ports: `mtls` (a CA-verified client
    certificate required) and `apikey` (TLS, and `authorization: Bearer API_KEY` required). TLS
    with HTTP/2 by ALPN, as gRPC clients require."""
    ports = {"mtls": server.free_port(), "apikey": server.free_port()}
    conf = tmp_path / "nginx.conf"
    temp = "".join(
        f"{kind}_temp_path {tmp_path / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf.write_text(
        f"daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'} warn;\n"
        + ("user root;\n" if os.geteuid() == 0 else "")
        + "events { worker_connections 256; }\nhttp {\n access_log off;\n"
        + temp
        + "".join(
            _server_block(port, pki, dev_server.info.address, mtls=kind == "mtls") for kind, port in ports.items()
        )
        + "}\n"
    )
    proc = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "error.log")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 20
    while not all(server.port_open(p) for p in ports.values()):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read() if proc.poll() is not None else "no port"
        )
        time.sleep(0.05)
    yield {kind: f"127.0.0.1:{port}" for kind, port in ports.items()}
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def proxy(proxies) -> str:
    return proxies["mtls"]


def cluster_env(dev_server, task_queue: str, address: str, **tls: str) -> dict[str, str]:
    env = dev_server.env(ENSEMBLE_TASK_QUEUE=task_queue, TEMPORAL_ADDRESS=address, **tls)
    return env


async def test_mutual_tls_through_the_proxy(dev_server, task_queue, proxy, pki):
    env = cluster_env(
        dev_server,
        task_queue,
        proxy,
        TEMPORAL_TLS_CA=str(pki["ca"]),
        TEMPORAL_TLS_CERT=str(pki["client_crt"]),
        TEMPORAL_TLS_KEY=str(pki["client_key"]),
        TEMPORAL_TLS_SERVER_NAME="localhost",
    )
    done = run_cli(["run", "hello", "--input", '{"name": "Ada"}', "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "completed"
    status = run_cli(["status", result["run_id"], "--json"], env)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "completed", status.stderr


@pytest.mark.parametrize(
    "who", ["no certificate", "a certificate from another CA", "no TLS at all", "an untrusted server"]
)
async def test_a_client_without_the_right_certificate_gets_one_line(dev_server, task_queue, proxy, pki, who):
    tls = {
        "no certificate": {"TEMPORAL_TLS_CA": str(pki["ca"]), "TEMPORAL_TLS_SERVER_NAME": "localhost"},
        "a certificate from another CA": {
            "TEMPORAL_TLS_CA": str(pki["ca"]),
            "TEMPORAL_TLS_CERT": str(pki["rogue_crt"]),
            "TEMPORAL_TLS_KEY": str(pki["rogue_key"]),
            "TEMPORAL_TLS_SERVER_NAME": "localhost",
        },
        "no TLS at all": {},
        "an untrusted server": {
            "TEMPORAL_TLS_CERT": str(pki["client_crt"]),
            "TEMPORAL_TLS_KEY": str(pki["client_key"]),
        },
    }[who]
    started = time.monotonic()
    result = run_cli(["status", "anything", "--json"], cluster_env(dev_server, task_queue, proxy, **tls), timeout=60)
    assert result.returncode == 1, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"error: cannot reach Temporal at {proxy} ("), lines[0]
    assert lines[0].endswith("check TEMPORAL_ADDRESS, TEMPORAL_API_KEY and the TEMPORAL_TLS_* settings"), lines[0]
    assert time.monotonic() - started < 30
    assert "tonic" not in lines[0] and "Status {" not in lines[0], lines[0]  # said in words, not the transport's dump


async def test_an_api_key_over_tls_through_the_proxy(dev_server, task_queue, proxies, pki):
    tls = {"TEMPORAL_TLS_CA": str(pki["ca"]), "TEMPORAL_TLS_SERVER_NAME": "localhost"}
    env = cluster_env(dev_server, task_queue, proxies["apikey"], TEMPORAL_API_KEY=API_KEY, **tls)
    done = run_cli(["run", "hello", "--input", '{"name": "Grace"}', "--wait", "--json"], env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    wrong = run_cli(
        ["status", "anything"], cluster_env(dev_server, task_queue, proxies["apikey"], TEMPORAL_API_KEY="nope", **tls)
    )
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
    assert "nope" not in wrong.stderr and API_KEY not in wrong.stderr
    assert "client certificate or API key is missing or not accepted" in wrong.stderr
