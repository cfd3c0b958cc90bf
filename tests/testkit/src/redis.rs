//! A throw-away `redis-server`: free port, no persistence (or an append-only file in a
//! temporary directory, for restarts that keep the data), killed by PID on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    /// With an append-only file: its directory (kept across restarts, removed on drop).
    aof_dir: Option<std::path::PathBuf>,
    /// More `redis-server` arguments (ACL users), kept across restarts.
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server; panics with a clear message when `redis-server` is not installed.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = crate::free_port();
            if let Some(s) = Self::try_start(port, None, Vec::new()) {
                return s;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Starts a server whose only user is `user` with `password` (an ACL user with every
    /// permission; the default user is off), as a managed Redis would be set up.
    pub fn start_with_user(user: &str, password: &str) -> RedisServer {
        let extra: Vec<String> = [
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for _ in 0..5 {
            let port = crate::free_port();
            if let Some(s) = Self::try_start(port, None, extra.clone()) {
                return s;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    /// Starts a server that writes every command to an append-only file (`appendfsync
    /// always`), so that [`RedisServer::restart`] brings the data back as a real restart would.
    pub fn start_with_aof() -> RedisServer {
        let dir = std::env::temp_dir().join(format!("llmr-aof-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for _ in 0..5 {
            let port = crate::free_port();
            if let Some(s) = Self::try_start(port, Some(dir.clone()), Vec::new()) {
                return s;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn try_start(port: u16, aof_dir: Option<std::path::PathBuf>, extra: Vec<String>) -> Option<RedisServer> {
        let port_s = port.to_string();
        let mut args = vec![
            "--port",
            &port_s,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--protected-mode",
            "no",
        ];
        let dir_s = aof_dir.as_ref().map(|d| d.display().to_string()).unwrap_or_default();
        match &aof_dir {
            Some(_) => args.extend(["--appendonly", "yes", "--appendfsync", "always", "--dir", &dir_s]),
            None => args.extend(["--appendonly", "no"]),
        }
        args.extend(extra.iter().map(String::as_str));
        let child = Command::new("redis-server")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed: the tests need a real Redis. Install the Debian package `redis-server` \
                 (apt-get install -y redis-server)."
            ),
            Err(e) => panic!("could not start redis-server: {e}"),
        };
        let mut s = RedisServer {
            child: Some(child),
            port,
            aof_dir,
            extra,
        };
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if s.ping() {
                return Some(s);
            }
            if let Some(c) = s.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return None; // exited: probably the port was taken meanwhile
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The server's process id (None once it was stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn ping(&self) -> bool {
        let Ok(mut c) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
        if c.write_all(b"PING\r\n").is_err() {
            return false;
        }
        // An answer is life: `+PONG`, or `-NOAUTH` when only ACL users may talk.
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
    }

    /// Refuses every key that starts with `prefix` to the default user — in every command,
    /// in scripts and transactions too (a `NOPERM` error) — while every other key and channel
    /// stays allowed: a store that fails for one feature while the bus and the rest work.
    /// Connections already open are affected at once; [`RedisServer::allow_all_keys`] undoes it.
    pub fn deny_keys(&self, prefix: &str) {
        assert!(
            !prefix.contains(['*', '?', '[', ']', '\\', '^']),
            "a plain prefix: {prefix}"
        );
        // ACL key patterns only allow; "everything but P" is, for each i, the keys that agree
        // with P before i and differ at i, and the keys that are a proper prefix of P.
        let chars: Vec<char> = prefix.chars().collect();
        let mut args = vec!["ACL".to_owned(), "SETUSER".into(), "default".into(), "resetkeys".into()];
        for i in 0..chars.len() {
            let head: String = chars[..i].iter().collect();
            args.push(format!("~{head}[^{}]*", chars[i]));
            if i > 0 {
                args.push(format!("~{head}"));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(self.command(&args), "+OK");
    }

    /// Allows every key again (see [`RedisServer::deny_keys`]).
    pub fn allow_all_keys(&self) {
        assert_eq!(self.command(&["ACL", "SETUSER", "default", "allkeys"]), "+OK");
    }

    /// Sends one command (e.g. `["CLIENT", "PAUSE", "1500", "ALL"]`) on a connection of its
    /// own; returns the first line of the reply.
    pub fn command(&self, args: &[&str]) -> String {
        let mut c = self.send(args);
        String::from_utf8_lossy(&read_line(&mut c)).trim_end().to_owned()
    }

    /// Calls of each command so far, from `INFO commandstats` (scripts' own commands
    /// counted; INFO itself left out), on a connection of its own.
    pub fn calls(&self) -> std::collections::BTreeMap<String, u64> {
        let mut c = self.send(&["INFO", "commandstats"]);
        // A bulk string: `$LEN\r\n`, LEN bytes, `\r\n`.
        let len: usize = String::from_utf8_lossy(&read_line(&mut c))
            .trim()
            .trim_start_matches('$')
            .parse()
            .unwrap_or_else(|e| panic!("redis INFO: {e}"));
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).unwrap_or_else(|e| panic!("redis INFO: {e}"));
        command_calls(&String::from_utf8_lossy(&body))
    }

    /// A connection of its own with `args` sent on it as one command.
    fn send(&self, args: &[&str]) -> TcpStream {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| panic!("redis: {e}"));
        let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        c.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("redis: {e}"));
        c
    }

    /// Kills the server (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port: empty, or with what its append-only file kept.
    pub fn restart(&mut self) {
        self.kill();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(mut s) = Self::try_start(self.port, self.aof_dir.clone(), self.extra.clone()) {
                self.child = s.child.take();
                s.aof_dir = None;
                return;
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(d) = self.aof_dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Reads up to the next `\n` (left out).
fn read_line(c: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while c.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    line
}

/// Calls per command in the text of `INFO commandstats` (`cmdstat_NAME:calls=N,…`), INFO's
/// own left out: what a test or the benchmark reads before and after a run.
pub fn command_calls(info: &str) -> std::collections::BTreeMap<String, u64> {
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split(',').find_map(|f| f.strip_prefix("calls="))?.parse().ok()?;
            (name != "info").then(|| (name.to_owned(), calls))
        })
        .collect()
}
