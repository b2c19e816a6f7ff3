//! Daemons on loopback, measured next to baselines from the same run:
//!
//! 1. stream throughput daemon to daemon through the IPC client, against
//!    kernel TCP over 127.0.0.1;
//! 2. round trip of a small echo through both daemons, against a plain UDP
//!    echo;
//! 3. resident memory of an idle daemon and rendezvous.
//!
//! `cargo bench -p pilotctl --bench daemon` (`PILOT_BENCH_QUICK=1` for a
//! short run). It starts its own rendezvous and daemons in a temporary
//! directory and stops them at the end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use driver_mio::client::Client;
use driver_mio::ipc::api::{Event, Request};
use serde_json::Value;

const PILOTCTL: &str = env!("CARGO_BIN_EXE_pilotctl");
const T: Duration = Duration::from_secs(30);

fn ctl(args: &[&str], home: Option<&Path>) -> Value {
    let mut c = Command::new(PILOTCTL);
    c.args(args).arg("--json").env_remove("PILOT_SOCKET");
    if let Some(h) = home {
        c.env("PILOT_HOME", h);
    }
    let out = c.output().expect("run pilotctl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(
        v["status"],
        "ok",
        "pilotctl {args:?}: {v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    v["data"].clone()
}

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

struct Stack {
    dir: PathBuf,
    rv_pid: u64,
    pids: Vec<u64>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        for name in ["alice", "bob"] {
            let mut c = Command::new(PILOTCTL);
            let _ = c
                .args(["daemon", "stop", "--json"])
                .env("PILOT_HOME", self.dir.join(name))
                .output();
        }
        let _ = Command::new(PILOTCTL)
            .args(["rendezvous", "stop", "--json", "--home"])
            .arg(self.dir.join("rv"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::var_os("PILOT_BENCH_QUICK").is_some();
    let dir = std::env::temp_dir().join(format!("pilot-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let rv_home = dir.join("rv");
    let rv = ctl(
        &[
            "rendezvous",
            "start",
            "--listen",
            "127.0.0.1:0",
            "--home",
            rv_home.to_str().unwrap(),
        ],
        None,
    );
    let (addr, key) = (
        rv["address"].as_str().unwrap().to_string(),
        rv["public_key"].as_str().unwrap().to_string(),
    );
    let mut stack = Stack {
        dir: dir.clone(),
        rv_pid: rv["pid"].as_u64().unwrap_or(0),
        pids: Vec::new(),
    };
    for name in ["alice", "bob"] {
        let home = dir.join(name);
        let d = ctl(
            &[
                "daemon",
                "start",
                "--rendezvous",
                &addr,
                "--rendezvous-key",
                &key,
                "--hostname",
                name,
                "--listen",
                "127.0.0.1:0",
            ],
            Some(&home),
        );
        stack.pids.push(d["pid"].as_u64().unwrap_or(0));
    }
    std::thread::sleep(Duration::from_millis(300));
    println!("3. resident memory (VmRSS)");
    println!("   idle daemon:     {:>7} KiB", rss_kib(stack.pids[0]));
    println!(
        "   idle rendezvous: {:>7} KiB (2 agents registered)",
        rss_kib(stack.rv_pid)
    );

    let mut alice = Client::connect(dir.join("alice/pilot.sock")).expect("alice");
    let mut bob = Client::connect(dir.join("bob/pilot.sock")).expect("bob");
    alice
        .request(
            Request::Handshake {
                peer: "bob".into(),
                reason: "bench".into(),
            },
            T,
        )
        .expect("handshake");
    let deadline = Instant::now() + T;
    while bob
        .request(Request::Pending, T)
        .map(|v| v.as_array().is_none_or(|a| a.is_empty()))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "no pending request");
        std::thread::sleep(Duration::from_millis(20));
    }
    bob.request(
        Request::Approve {
            node: "alice".into(),
        },
        T,
    )
    .expect("approve");
    while alice
        .request(Request::Trusted, T)
        .map(|v| v.as_array().is_none_or(|a| a.is_empty()))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "not trusted");
        std::thread::sleep(Duration::from_millis(20));
    }

    // 1. Throughput: alice writes, bob's application reads and discards.
    let mib = if quick { 16 } else { 128 };
    let total = mib << 20;
    bob.request(Request::Listen { port: 5000 }, T)
        .expect("listen");
    let v = alice
        .request(
            Request::Connect {
                peer: "bob".into(),
                port: 5000,
            },
            T,
        )
        .expect("connect");
    let tx = v["stream"].as_u64().expect("stream") as u32;
    let rx = loop {
        if let Ok(Some(Event::Incoming { stream, .. })) = bob.next_event(T) {
            break stream;
        }
    };
    let chunk = vec![0x42u8; 256 * 1024];
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        while let Ok(Some(bytes)) = bob.read_stream(rx, T) {
            got += bytes.len();
            if got >= total {
                break;
            }
        }
        (got, Instant::now())
    });
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        alice.write_stream(tx, &chunk).expect("write");
        sent += chunk.len();
    }
    let (got, end) = reader.join().expect("reader");
    let pilot = end.duration_since(start);
    let tcp = kernel_tcp(total);
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("1. stream throughput on loopback, {mib} MiB");
    println!(
        "   daemon to daemon via IPC: {:>8.1} MiB/s ({got} bytes in {:.2} s)",
        rate(pilot),
        pilot.as_secs_f64()
    );
    println!("   baseline kernel TCP:      {:>8.1} MiB/s", rate(tcp));
    println!(
        "   Pilot = {:.1} % of kernel TCP",
        100.0 * tcp.as_secs_f64() / pilot.as_secs_f64()
    );

    // 2. Round trip of 64 bytes through bob's echo service.
    let mut alice = Client::connect(dir.join("alice/pilot.sock")).expect("alice");
    let v = alice
        .request(
            Request::Connect {
                peer: "bob".into(),
                port: 7,
            },
            T,
        )
        .expect("connect echo");
    let echo = v["stream"].as_u64().expect("stream") as u32;
    let n = if quick { 200 } else { 1000 };
    let msg = [7u8; 64];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        alice.write_stream(echo, &msg).expect("write");
        let mut got = 0;
        while got < msg.len() {
            got += alice
                .read_stream(echo, T)
                .expect("read")
                .expect("open")
                .len();
        }
        rtts.push(t.elapsed());
    }
    let udp = udp_echo(n);
    println!("2. round trip of 64 B, median of {n}");
    println!(
        "   through both daemons (stream echo): {:>8.1} µs",
        median(rtts).as_secs_f64() * 1e6
    );
    println!(
        "   baseline plain UDP echo:            {:>8.1} µs",
        median(udp).as_secs_f64() * 1e6
    );
    drop(stack.pids.drain(..));
}

fn kernel_tcp(total: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Instant::now()
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![0x42u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    reader.join().expect("reader").duration_since(start)
}

fn udp_echo(n: usize) -> Vec<Duration> {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..n {
            if let Ok((len, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..len], from);
            }
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let rtts = (0..n)
        .map(|_| {
            let t = Instant::now();
            client.send_to(&[7u8; 64], addr).expect("send");
            let _ = client.recv_from(&mut buf);
            t.elapsed()
        })
        .collect();
    let _ = echo.join();
    rtts
}
