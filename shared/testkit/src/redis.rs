//! A throw-away `redis-server`: free port, no persistence, killed by PID on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    /// Starts a server; panics with a clear message when `redis-server` is not installed.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let port = crate::free_port();
            if let Some(s) = Self::try_start(port) {
                return s;
            }
        }
        panic!("redis-server did not start after 5 attempts");
    }

    fn try_start(port: u16) -> Option<RedisServer> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ])
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
        let mut buf = [0u8; 7];
        c.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kills the server (SIGKILL), as an outage would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Some(mut s) = Self::try_start(self.port) {
                self.child = s.child.take();
                return;
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
