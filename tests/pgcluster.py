"""Real PostgreSQL clusters for the tests: initdb into a temporary folder, TCP on 127.0.0.1.

Each cluster has scram-sha-256 for the role `pwuser`, trust for everything else over the socket and
TCP, and (optionally) SSL with a CA, a server certificate and a client certificate made with the
`cryptography` package:
  - database `sslonly` only over SSL (hostnossl ... reject), for the "server requires SSL" case;
  - role `certuser` on database `certdb` only with a client certificate (cert auth).
When the tests run as root the cluster runs as minnoctl's service user, as the embedded one does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from minnoctl.local import _allow_traverse, _service_ids

PASSWORD = "s3cret-Pa55:/@word"  # has URL-special characters on purpose
DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Certs:
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here: verification against it must fail


def make_certs(folder: Path) -> Certs:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    def ca(cn: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn: str, ca_key, ca_cert, san: list | None):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30)))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("minnoctl test CA")
    _, other_cert = ca("some other CA")
    srv_key, srv_cert = leaf("localhost", ca_key, ca_cert,
                             [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cli_key, cli_cert = leaf("certuser", ca_key, ca_cert, None)
    pem = serialization.Encoding.PEM
    certs = Certs(folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "client.crt",
                  folder / "client.key", folder / "other-ca.crt")
    certs.ca.write_bytes(ca_cert.public_bytes(pem))
    certs.other_ca.write_bytes(other_cert.public_bytes(pem))
    certs.server_crt.write_bytes(srv_cert.public_bytes(pem))
    write_key(srv_key, certs.server_key)
    certs.client_crt.write_bytes(cli_cert.public_bytes(pem))
    write_key(cli_key, certs.client_key)
    return certs


@dataclass
class Cluster:
    name: str
    bin_dir: Path
    folder: Path
    ssl: bool
    port: int = field(default_factory=free_port)
    certs: Certs | None = None
    version: str = ""
    preload: tuple[str, ...] = ()  # shared_preload_libraries before pg_stat_statements (citus must be first)

    @property
    def pgdata(self) -> Path:
        return self.folder / "pgdata"

    def _run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        ids = _service_ids()
        extra = {"user": ids[0], "group": ids[1], "extra_groups": []} if ids else {}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd="/", **extra, **kwargs)

    def start(self) -> "Cluster":
        ids = _service_ids()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(mode=0o700)
        if ids:
            _allow_traverse(self.folder)
            _allow_traverse(self.bin_dir)
            os.chown(self.pgdata, *ids)
        result = self._run([str(self.bin_dir / "initdb"), "-D", str(self.pgdata), "-U", "postgres",
                            "--auth=trust", "--encoding=UTF8", "--no-locale"])
        assert result.returncode == 0, result.stderr
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.pgdata}'",
            "password_encryption = 'scram-sha-256'",
            "fsync = off",
        ]
        preload = list(self.preload)
        if (self.bin_dir.parent / "lib" / "pg_stat_statements.so").exists():  # Debian's contrib: health's slow_queries
            preload.append("pg_stat_statements")
        if preload:
            conf.append(f"shared_preload_libraries = '{','.join(preload)}'")
        if "citus" in self.preload:
            # the nodes talk over loopback without SSL (libpq would otherwise read the client
            # certificate of the HOME the server inherited)
            conf.append("citus.node_conninfo = 'sslmode=disable'")
        hba = ["local all all trust"]
        if self.ssl:
            self.certs = make_certs(self.folder / "certs")
            for src in (self.certs.server_crt, self.certs.server_key, self.certs.ca):
                shutil.copy(src, self.pgdata / src.name)
                if ids:
                    os.chown(self.pgdata / src.name, *ids)
            conf += ["ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'",
                     "ssl_ca_file = 'ca.crt'"]
            hba += [
                "hostnossl sslonly all 127.0.0.1/32 reject",
                "hostssl certdb certuser 127.0.0.1/32 cert",
            ]
        hba += [
            "host all pwuser 127.0.0.1/32 scram-sha-256",
            "host all all 127.0.0.1/32 trust",
        ]
        with open(self.pgdata / "postgresql.conf", "a") as fh:
            fh.write("\n".join(conf) + "\n")
        (self.pgdata / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        result = self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-l",
                            str(self.pgdata / "server.log"), "-w", "-t", "60", "start"])
        assert result.returncode == 0, result.stderr + (self.pgdata / "server.log").read_text()
        self.setup()
        return self

    def setup(self) -> None:
        import psycopg

        with psycopg.connect(**self.admin_params("postgres"), autocommit=True) as conn:
            self.version = conn.execute("SHOW server_version").fetchone()[0].split()[0]
            conn.execute(f"CREATE ROLE pwuser LOGIN PASSWORD '{PASSWORD}'")
            conn.execute("CREATE DATABASE pwdb OWNER pwuser")
            if self.ssl:
                conn.execute("CREATE ROLE certuser LOGIN")
                conn.execute("CREATE DATABASE certdb OWNER certuser")
                conn.execute("CREATE DATABASE sslonly")

    def stop(self) -> None:
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "-w", "stop"])

    def admin_params(self, dbname: str = "postgres") -> dict[str, str]:
        return {"host": "127.0.0.1", "port": str(self.port), "user": "postgres", "dbname": dbname}

    def url(self, dbname: str = "postgres", user: str = "postgres", password: str | None = None,
            **query: str) -> str:
        from urllib.parse import quote, urlencode

        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        q = f"?{urlencode(query)}" if query else ""
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}{q}"


CITUS_DATABASE = "minno"


@dataclass
class CitusCluster:
    """A real Citus cluster on loopback: a coordinator and WORKERS workers, each an ordinary PostgreSQL 15
    cluster with citus preloaded, the extension created in CITUS_DATABASE on every node, the coordinator's
    host set and the workers added (../shared/pg15-extensions/README.md)."""

    folder: Path
    workers: int = 2
    nodes: list[Cluster] = field(default_factory=list)

    @property
    def coordinator(self) -> Cluster:
        return self.nodes[0]

    def start(self) -> "CitusCluster":
        for i in range(self.workers + 1):
            node = Cluster(f"citus{i}", DEBIAN_PG15, self.folder / f"n{i}", ssl=False, preload=("citus",))
            self.nodes.append(node.start())
        self.create_database(CITUS_DATABASE)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def url(self, dbname: str = CITUS_DATABASE) -> str:
        return self.coordinator.url(dbname)

    def worker_url(self, index: int, dbname: str = CITUS_DATABASE) -> str:
        return self.nodes[1 + index].url(dbname)

    def create_database(self, name: str) -> str:
        """A new database on every node with citus in it and the workers added: a cluster of its own
        (Citus keeps its metadata per database); returns the coordinator's URL to it."""
        import psycopg

        for node in self.nodes:
            with psycopg.connect(**node.admin_params("postgres"), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            with psycopg.connect(**node.admin_params(name), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION citus")
        with psycopg.connect(**self.coordinator.admin_params(name), autocommit=True) as conn:
            conn.execute("SELECT citus_set_coordinator_host('127.0.0.1', %s)", (self.coordinator.port,))
            for node in self.nodes[1:]:
                conn.execute("SELECT citus_add_node('127.0.0.1', %s)", (node.port,))
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        for node in self.nodes:
            with psycopg.connect(**node.admin_params("postgres"), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def without_pgvector(folder: Path) -> Path:
    """Debian's PostgreSQL 15 as it is without ../shared/pg15-extensions: a copy of its programs (a
    server finds its library and share folders beside its own real path) whose library and extension
    folders link to everything but pgvector's files. Returns the copy's bin folder."""
    lib_root, share_root = DEBIAN_PG15.parent, Path("/usr/share/postgresql/15")
    root = folder / "usr"
    bin_copy = root / "lib" / "postgresql" / "15" / "bin"
    if bin_copy.exists():
        return bin_copy
    shutil.copytree(DEBIAN_PG15, bin_copy, symlinks=False)
    for src, dst in ((lib_root / "lib", root / "lib" / "postgresql" / "15" / "lib"),
                     (share_root, root / "share" / "postgresql" / "15")):
        dst.mkdir(parents=True)
        for entry in src.iterdir():
            if entry.name == "extension":
                (dst / "extension").mkdir()
                for ext in entry.iterdir():
                    if not ext.name.startswith("vector"):
                        (dst / "extension" / ext.name).symlink_to(ext)
            elif not entry.name.startswith("vector"):
                (dst / entry.name).symlink_to(entry)
    for path in (folder, root, root / "lib", root / "lib" / "postgresql", root / "share"):
        path.chmod(0o755)
    return bin_copy


def citus_installed() -> bool:
    return (DEBIAN_PG15.parent / "lib" / "citus.so").exists()


def wait_closed(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.1)
