//! The floors each path is compared with, measured in the same run: a bare nginx proxy hop
//! in front of the mock (the floor of the in-process path: one HTTP hop and nothing else),
//! and a bare three-hop Redis stream round trip (the floor of the cluster path: gateway →
//! router → worker → gateway are three stream hops, each XADD, a consumer group's
//! XREADGROUP and XACK; the last is read with XREAD, as replies are).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use llmr_testkit::Proc;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, RedisResult};

use crate::load::Stats;

/// A payload the size of a routed request's envelope.
const PAYLOAD: usize = 400;

/// One hop: reads `from` in a consumer group, adds each entry to `to`, acks it; a `stop`
/// entry is passed on and ends the hop.
fn hop(url: &str, from: &str, to: &str) -> RedisResult<()> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    let opts = StreamReadOptions::default().group("g", "c").count(16).block(1000);
    loop {
        let reply: StreamReadReply = c.xread_options(&[from], &[">"], &opts)?;
        for key in reply.keys {
            for entry in key.ids {
                let data: Vec<u8> = entry.get("d").unwrap_or_default();
                let _: String = c.xadd(to, "*", &[("d", &data)])?;
                let _: u64 = c.xack(from, "g", &[&entry.id])?;
                if data == b"stop" {
                    return Ok(());
                }
            }
        }
    }
}

/// `n` serial round trips through three stream hops on the Redis at `url`.
pub fn redis_three_hops(url: &str, n: usize) -> RedisResult<Stats> {
    let mut c = redis::Client::open(url)?.get_connection()?;
    let [s1, s2, s3] = ["floor:1", "floor:2", "floor:3"];
    for s in [s1, s2] {
        let _: RedisResult<String> = c.xgroup_create_mkstream(s, "g", "$");
    }
    let hops: Vec<_> = [(s1, s2), (s2, s3)]
        .into_iter()
        .map(|(from, to)| {
            let url = url.to_owned();
            std::thread::spawn(move || hop(&url, from, to))
        })
        .collect();
    let payload = vec![b'x'; PAYLOAD];
    let mut last = "$".to_owned();
    let mut stats = Stats::default();
    let opts = StreamReadOptions::default().count(1).block(2000);
    let start = Instant::now();
    for i in 0..=n {
        let sent = Instant::now();
        let data: &[u8] = if i == n { b"stop" } else { &payload };
        let _: String = c.xadd(s1, "*", &[("d", data)])?;
        let reply: StreamReadReply = c.xread_options(&[s3], &[&last], &opts)?;
        match reply.keys.first().and_then(|k| k.ids.last()) {
            Some(entry) => {
                last.clone_from(&entry.id);
                if i < n {
                    stats.record(sent.elapsed(), sent.elapsed());
                }
            }
            None => stats.errors += 1,
        }
    }
    stats.elapsed = start.elapsed();
    for h in hops {
        let _ = h.join();
    }
    Ok(stats)
}

/// A bare nginx (Debian's package; one process, keep-alive to the upstream) proxying to the
/// mock on `upstream_port`; stopped by PID when dropped.
pub struct Nginx {
    pub proc: Proc,
    pub port: u16,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where Debian puts nginx.
pub fn nginx_binary() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl Nginx {
    pub fn start(binary: &Path, upstream_port: u16) -> std::io::Result<Nginx> {
        let port = llmr_testkit::free_port();
        let dir = std::env::temp_dir().join(format!("llmr-bench-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\npid {d}/nginx.pid;\nerror_log {d}/error.log crit;\n\
             events {{ worker_connections 16384; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream mock {{ server 127.0.0.1:{upstream_port}; keepalive 512; }}\n\
               server {{\n    listen 127.0.0.1:{port} backlog=4096;\n    keepalive_requests 1000000;\n\
                 location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}\n  }}\n}}\n"
        );
        let file = dir.join("nginx.conf");
        std::fs::write(&file, conf)?;
        let child = Command::new(binary)
            .args(["-p", &d.to_string(), "-c", &file.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let proc = Proc::adopt("nginx", child);
        if !llmr_testkit::wait_for_port(port, Duration::from_secs(10)) {
            return Err(std::io::Error::other("nginx did not listen"));
        }
        Ok(Nginx { proc, port, dir })
    }
}
