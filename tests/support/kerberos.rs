//! A REAL MIT Kerberos KDC (Debian's `krb5-kdc`) and a REAL SPNEGO acceptor (Debian's `apache2`
//! with `libapache2-mod-auth-gssapi`) in front of an HTTP backend, on free loopback ports under
//! a temp folder, for tests. Apache demands `Authorization: Negotiate`, keeps the client in a
//! session cookie named `hadoop.auth` (as Hadoop's `AuthenticationFilter` does) for
//! `session_max_age` seconds, logs whether each request carried a Negotiate token, and passes
//! the authenticated principal to the backend in `X-Remote-User`. Needs root (apache's worker
//! runs as www-data); scripts/test.sh installs the packages.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The realm of every test KDC.
pub const REALM: &str = "TEST.LOCAL";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (is krb5-kdc installed? scripts/test.sh installs it)")
    });
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A KDC and its realm's files.
pub struct Kdc {
    pub dir: PathBuf,
    pub port: u16,
    /// The client's krb5.conf (tickets of `ticket_lifetime`).
    pub krb5_conf: PathBuf,
    child: Child,
}

impl Kdc {
    /// A realm with `HTTP/localhost` and the client `jobkeeper/ops-1`, tickets lasting
    /// `ticket_lifetime` (e.g. `"20s"`).
    pub fn start(dir: &Path, ticket_lifetime: &str) -> Kdc {
        assert!(
            std::fs::read_to_string("/proc/self/status")
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0")),
            "the Kerberos tests need root (apache's worker runs as www-data)"
        );
        std::fs::create_dir_all(dir).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let krb5_conf = dir.join("krb5.conf");
        std::fs::write(
            &krb5_conf,
            format!(
                "[libdefaults]\n  default_realm = {REALM}\n  dns_lookup_kdc = false\n  dns_lookup_realm = false\n  \
                 rdns = false\n  ticket_lifetime = {ticket_lifetime}\n  udp_preference_limit = 1\n\
                 [realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{port}\n  }}\n[domain_realm]\n  localhost = {REALM}\n"
            ),
        )
        .unwrap();
        std::fs::set_permissions(&krb5_conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        let d = dir.display();
        std::fs::write(
            dir.join("kdc.conf"),
            format!(
                "[kdcdefaults]\n  kdc_ports = {port}\n  kdc_tcp_ports = {port}\n[realms]\n  {REALM} = {{\n    \
                 database_name = {d}/principal\n    key_stash_file = {d}/stash\n    acl_file = {d}/kadm5.acl\n    max_life = 10h\n  }}\n"
            ),
        )
        .unwrap();
        let env = |c: &mut Command| {
            c.env("KRB5_CONFIG", &krb5_conf)
                .env("KRB5_KDC_PROFILE", dir.join("kdc.conf"));
        };
        let mut c = Command::new("kdb5_util");
        c.args(["create", "-s", "-r", REALM, "-P", "master-pw"]);
        env(&mut c);
        run(&mut c);
        let mut c = Command::new("krb5kdc");
        c.args(["-n", "-P"])
            .arg(dir.join("kdc.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        env(&mut c);
        let child = c.spawn().expect("krb5kdc runs");
        let kdc = Kdc {
            dir: dir.to_path_buf(),
            port,
            krb5_conf,
            child,
        };
        kdc.principal("HTTP/localhost", Some(&dir.join("http.keytab")));
        kdc.principal("jobkeeper/ops-1", Some(&dir.join("client.keytab")));
        std::fs::set_permissions(
            dir.join("http.keytab"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the KDC did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kdc
    }

    /// Adds principal `name` with a random key, written to `keytab` when given.
    pub fn principal(&self, name: &str, keytab: Option<&Path>) {
        self.kadmin(&format!("addprinc -randkey {name}"));
        if let Some(k) = keytab {
            self.kadmin(&format!("ktadd -k {} {name}", k.display()));
        }
    }

    pub fn kadmin(&self, q: &str) {
        let mut c = Command::new("kadmin.local");
        c.args(["-q", q])
            .env("KRB5_CONFIG", &self.krb5_conf)
            .env("KRB5_KDC_PROFILE", self.dir.join("kdc.conf"));
        run(&mut c);
    }

    pub fn client_keytab(&self) -> PathBuf {
        self.dir.join("client.keytab")
    }
}

impl Drop for Kdc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// apache2 + mod_auth_gssapi demanding SPNEGO in front of `backend`.
pub struct Spnego {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl Spnego {
    pub fn start(kdc: &Kdc, backend: u16, session_max_age: u32) -> Spnego {
        let dir = kdc.dir.join(format!("apache-{backend}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let port = free_port();
        let m = "/usr/lib/apache2/modules";
        let d = dir.display();
        let modules: String = [
            ("mpm_event_module", "mod_mpm_event.so"),
            ("authn_core_module", "mod_authn_core.so"),
            ("authz_core_module", "mod_authz_core.so"),
            ("authz_user_module", "mod_authz_user.so"),
            ("auth_gssapi_module", "mod_auth_gssapi.so"),
            ("session_module", "mod_session.so"),
            ("session_cookie_module", "mod_session_cookie.so"),
            ("proxy_module", "mod_proxy.so"),
            ("proxy_http_module", "mod_proxy_http.so"),
            ("headers_module", "mod_headers.so"),
        ]
        .iter()
        .map(|(n, f)| format!("LoadModule {n} {m}/{f}\n"))
        .collect();
        let conf = format!(
            "ServerRoot {d}\nListen 127.0.0.1:{port}\nServerName localhost\nPidFile {d}/httpd.pid\n\
             DefaultRuntimeDir {d}\nUser www-data\nGroup www-data\nErrorLog {d}/error.log\nLogLevel info\n\
             LogFormat \"%>s %m %U auth=%{{Authorization}}i\" auth\nCustomLog {d}/access.log auth\n{modules}\
             <Location />\n  AuthType GSSAPI\n  AuthName yarn\n  GssapiCredStore keytab:{}\n  \
             GssapiUseSessions On\n  Session On\n  SessionCookieName hadoop.auth path=/;httponly\n  \
             SessionMaxAge {session_max_age}\n  Require valid-user\n  \
             RequestHeader set X-Remote-User \"expr=%{{REMOTE_USER}}\"\n</Location>\n\
             ProxyPass / http://127.0.0.1:{backend}/\n",
            kdc.dir.join("http.keytab").display()
        );
        std::fs::write(dir.join("httpd.conf"), conf).unwrap();
        let child = Command::new("apache2")
            .arg("-f")
            .arg(dir.join("httpd.conf"))
            .arg("-DFOREGROUND")
            .env("KRB5_CONFIG", &kdc.krb5_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect(
                "apache2 runs (scripts/test.sh installs apache2 and libapache2-mod-auth-gssapi)",
            );
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "apache did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Spnego { port, dir, child }
    }

    /// `http://localhost:PORT` (the service is `HTTP/localhost`).
    pub fn url(&self) -> String {
        format!("http://localhost:{}", self.port)
    }

    /// (requests, requests carrying a Negotiate token, 401 answers) apache logged so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        let log = std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        (
            lines.len(),
            lines
                .iter()
                .filter(|l| l.contains("auth=Negotiate "))
                .count(),
            lines.iter().filter(|l| l.starts_with("401 ")).count(),
        )
    }
}

impl Drop for Spnego {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}
