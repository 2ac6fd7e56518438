"""Throwaway TLS certificates for the rig: one test CA and server certificates for 127.0.0.1.

    certs = make_ca_and_cert(tmp_dir)            # CA + a cert for 127.0.0.1 (subjectAltName IP)
    certs.ca_cert, certs.cert, certs.key         # PEM files
    certs.combined_pem                           # cert followed by key: baresip's sip_certificate
    callflow = issue_cert(certs, "callflow")     # another 127.0.0.1 cert signed by the same CA

Kamailio (tls.cfg), baresip (sip_certificate / sip_cafile) and Callflow's own TLS listener all use
certificates from one CA, so every peer can verify every other one, or at least connect.

Made with the `cryptography` package (a test dependency) when it is importable, else with the
openssl command-line tool. Results are cached per directory (and certificate name): a second call
for the same directory returns the files already there, and a file lock makes parallel test
processes sharing a directory safe. Keys are RSA 2048 in traditional PEM, the most widely
readable form (libre's OpenSSL wrapper, Kamailio's tls module, Python's ssl).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import ipaddress
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

CA_NAME = "Callflow rig test CA"
VALID_DAYS = 365


@dataclass(frozen=True)
class Certs:
    """PEM files: the CA (cert, key) and one server certificate signed by it."""

    ca_cert: Path
    ca_key: Path
    cert: Path
    key: Path
    combined_pem: Path
    """cert then key in one file (baresip's sip_certificate, many servers' 'pem' option)."""

    @property
    def dir(self) -> Path:
        return self.cert.parent


def make_ca_and_cert(dir: str | os.PathLike[str], host: str = "127.0.0.1",
                     name: str = "server") -> Certs:
    """Create (or reuse) dir/ca.pem + dir/ca.key and a certificate `name` for `host` signed by it.

    `host` becomes the subjectAltName (an IP address entry for an IP literal, a DNS entry
    otherwise) and the CN. A cached certificate made for another host is replaced.
    """
    folder = Path(dir)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        ca_cert, ca_key = folder / "ca.pem", folder / "ca.key"
        new_ca = not (ca_cert.exists() and ca_key.exists())
        if new_ca:
            _backend().make_ca(ca_cert, ca_key)
        return _leaf(folder, ca_cert, ca_key, host, _check_name(name), force=new_ca)


def issue_cert(ca: Certs, name: str, host: str = "127.0.0.1",
               dir: str | os.PathLike[str] | None = None) -> Certs:
    """Another certificate for `host` signed by `ca`'s CA (e.g. Callflow's own), cached like the first.

    Written next to the CA unless `dir` is given. The returned Certs shares ca_cert/ca_key.
    """
    _check_name(name)
    folder = Path(dir) if dir is not None else ca.ca_cert.parent
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        return _leaf(folder, ca.ca_cert, ca.ca_key, host, name)


# -- internals -----------------------------------------------------------------------------------

class _locked:
    """An exclusive flock on dir/.certs.lock for the duration of a with-block."""

    def __init__(self, folder: Path) -> None:
        self._path = folder / ".certs.lock"
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o666)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)  # releases the lock


def _check_name(name: str) -> str:
    if name == "ca" or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"certificate name {name!r}: use letters, digits, '-' and '_' (not 'ca')")
    return name


def _leaf(folder: Path, ca_cert: Path, ca_key: Path, host: str, name: str, force: bool = False) -> Certs:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    combined, marker = folder / f"{name}-combined.pem", folder / f"{name}.host"
    # the marker (host and CA fingerprint) is written last: when it matches, the set is complete
    # and was made for this host by this CA
    stamp = f"{host}\n{hashlib.sha256(ca_cert.read_bytes()).hexdigest()}\n"
    fresh = (not force and all(p.exists() for p in (cert, key, combined, marker))
             and marker.read_text() == stamp)
    if not fresh:
        _backend().make_leaf(ca_cert, ca_key, cert, key, host)
        _write(combined, cert.read_bytes() + key.read_bytes(), 0o600)
        _write(marker, stamp.encode())
    return Certs(ca_cert=ca_cert, ca_key=ca_key, cert=cert, key=key, combined_pem=combined)


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Atomic write (rename), so a reader never sees half a PEM file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _Cryptography:
    """Backend using the `cryptography` package."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.x509, self.hashes, self.ser, self.rsa = x509, hashes, serialization, rsa
        self.eku, self.oid = ExtendedKeyUsageOID, NameOID

    def _key(self):
        return self.rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def _key_pem(self, key) -> bytes:
        return key.private_bytes(self.ser.Encoding.PEM, self.ser.PrivateFormat.TraditionalOpenSSL,
                                 self.ser.NoEncryption())

    def _validity(self, builder):
        now = datetime.datetime.now(datetime.UTC)
        return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(
            now + datetime.timedelta(days=VALID_DAYS))

    def make_ca(self, cert_path: Path, key_path: Path) -> None:
        x509 = self.x509
        key = self._key()
        name = x509.Name([x509.NameAttribute(self.oid.COMMON_NAME, CA_NAME)])
        builder = self._validity(
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()))
        cert = (builder
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=True,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, self.hashes.SHA256()))
        _write(key_path, self._key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(self.ser.Encoding.PEM))

    def make_leaf(self, ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, host: str) -> None:
        x509 = self.x509
        issuer = x509.load_pem_x509_certificate(ca_cert.read_bytes())
        signer = self.ser.load_pem_private_key(ca_key.read_bytes(), password=None)
        key = self._key()
        san: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(host)) if _is_ip(host)
                                 else x509.DNSName(host))
        builder = self._validity(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(self.oid.COMMON_NAME, host)]))
            .issuer_name(issuer.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()))
        cert = (builder
                .add_extension(x509.SubjectAlternativeName([san]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=True, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([self.eku.SERVER_AUTH, self.eku.CLIENT_AUTH]),
                               critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                               critical=False)
                .sign(signer, self.hashes.SHA256()))
        _write(key_path, self._key_pem(key), 0o600)
        _write(cert_path, cert.public_bytes(self.ser.Encoding.PEM))


class _OpensslCli:
    """Fallback backend: the openssl command-line tool (1.1.1+ for -addext)."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    def _run(self, *args: str) -> None:
        result = subprocess.run([self.binary, *args], capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stdout}{result.stderr}")

    def _rsa_key(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        self._run("genrsa", "-traditional", "-out", str(tmp), "2048")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def make_ca(self, cert_path: Path, key_path: Path) -> None:
        self._rsa_key(key_path)
        tmp = cert_path.with_name(f".{cert_path.name}.tmp")
        self._run("req", "-x509", "-new", "-key", str(key_path), "-sha256", "-days", str(VALID_DAYS),
                  "-subj", f"/CN={CA_NAME}", "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
                  "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
                  "-out", str(tmp))
        os.replace(tmp, cert_path)

    def make_leaf(self, ca_cert: Path, ca_key: Path, cert_path: Path, key_path: Path, host: str) -> None:
        self._rsa_key(key_path)
        san = f"IP:{host}" if _is_ip(host) else f"DNS:{host}"
        with tempfile.TemporaryDirectory(dir=cert_path.parent) as work:
            csr, ext, out = Path(work) / "leaf.csr", Path(work) / "leaf.ext", Path(work) / "leaf.pem"
            ext.write_text(f"subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n"
                           "keyUsage=critical,digitalSignature,keyEncipherment\n"
                           "extendedKeyUsage=serverAuth,clientAuth\n")
            self._run("req", "-new", "-key", str(key_path), "-subj", f"/CN={host}", "-out", str(csr))
            self._run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
                      "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-sha256",
                      "-days", str(VALID_DAYS), "-extfile", str(ext), "-out", str(out))
            os.replace(out, cert_path)


def _backend() -> _Cryptography | _OpensslCli:
    """The cryptography package when importable (env RIG_CERTS_BACKEND=openssl forces the CLI)."""
    if os.environ.get("RIG_CERTS_BACKEND", "").lower() != "openssl":
        try:
            return _Cryptography()
        except ImportError:
            pass
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("cannot make test certificates: neither the `cryptography` package nor the "
                           "openssl command-line tool is installed")
    return _OpensslCli(binary)


def certs_problem() -> str | None:
    """Why certificates cannot be made here, or None."""
    try:
        _backend()
    except RuntimeError as exc:
        return str(exc)
    return None
