//! The ceiling that loopback TCP puts on a request/answer protocol on this
//! machine: servers that do no work at all, answering every request at once.
//!
//! YCSB's point workloads are one request in flight per client thread, the
//! clients on the same cores as the server. Whatever a database does, every
//! operation costs at least a client `send`, a server receive, a server
//! `send` and a client receive, with the wakeups between them. This measures
//! that floor with the same shape as `ycsb-bench` (16 client threads, small
//! requests, 1.1 KiB answers) against two echo servers that do nothing else:
//! - a thread per connection, blocking (PostgreSQL's shape: a backend per
//!   connection);
//! - one thread per core, each serving its share of the connections through
//!   epoll (PhotonDB's shape: a shard per core).
//!
//! A database's figure for such a workload cannot exceed the better of the
//! two; read `ycsb-bench`'s ratios against it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[allow(dead_code)] // only the machine's description is needed here
mod machine;
use serde_json::json;

#[derive(Parser)]
struct Arguments {
    /// Client threads, each with one connection and one request in flight.
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Seconds each server shape runs.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Bytes in each request (a YCSB point `get` is about 60 on the wire).
    #[arg(long, default_value_t = 64)]
    request_bytes: usize,
    /// Bytes in each answer (a 1 KiB document as JSON is about 1,100).
    #[arg(long, default_value_t = 1100)]
    answer_bytes: usize,
    /// Where to write the Markdown report (a JSON twin goes beside it).
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

fn pin_to_core(core: usize) {
    // SAFETY: a zeroed cpu_set_t is empty; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Blocking,
    Epoll,
    EpollPinned,
}

impl Shape {
    fn describe(self) -> &'static str {
        match self {
            Shape::Blocking => "thread per connection (blocking)",
            Shape::Epoll => "thread per core (epoll)",
            Shape::EpollPinned => "thread per core, pinned (epoll)",
        }
    }
}

struct Outcome {
    round_trips_per_second: f64,
    client_cpu_microseconds: f64,
    server_cpu_microseconds: f64,
}

/// CPU seconds used by threads that have finished, added up.
#[derive(Default)]
struct CpuTally(std::sync::Mutex<f64>);

impl CpuTally {
    fn add(&self, seconds: f64) {
        *self.0.lock().unwrap() += seconds;
    }
    fn total(&self) -> f64 {
        *self.0.lock().unwrap()
    }
}

fn serve_blocking(mut stream: TcpStream, request_bytes: usize, answer: &[u8], cpu: &CpuTally) {
    let mut request = vec![0u8; request_bytes];
    while stream.read_exact(&mut request).is_ok() {
        if stream.write_all(answer).is_err() {
            break;
        }
    }
    cpu.add(thread_cpu_seconds());
}

/// One epoll loop over `streams`, until every client has gone.
fn serve_epoll(streams: Vec<TcpStream>, request_bytes: usize, answer: &[u8], cpu: &CpuTally) {
    // SAFETY: plain epoll calls on descriptors this function owns for its
    // whole run; `events` outlives every epoll_wait that fills it.
    unsafe {
        let epoll = libc::epoll_create1(0);
        assert!(epoll >= 0, "epoll_create1");
        for (index, stream) in streams.iter().enumerate() {
            stream.set_nonblocking(true).expect("nonblocking");
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: index as u64,
            };
            let added = libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, stream.as_raw_fd(), &mut event);
            assert_eq!(added, 0, "epoll_ctl");
        }
        let mut pending = vec![0usize; streams.len()];
        let mut open = streams.len();
        let mut buffer = vec![0u8; request_bytes * 4];
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; streams.len()];
        while open > 0 {
            let ready = libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, -1);
            if ready < 0 {
                continue;
            }
            for event in &events[..ready as usize] {
                let index = event.u64 as usize;
                let mut stream = &streams[index];
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) if pending[index] != usize::MAX => {
                        let mut gone = libc::epoll_event { events: 0, u64: 0 };
                        libc::epoll_ctl(epoll, libc::EPOLL_CTL_DEL, stream.as_raw_fd(), &mut gone);
                        pending[index] = usize::MAX;
                        open -= 1;
                    }
                    Ok(read) => {
                        pending[index] += read;
                        while pending[index] >= request_bytes {
                            pending[index] -= request_bytes;
                            // An empty loopback send buffer takes 1.1 KiB at
                            // once; write_all retries if it ever does not.
                            while let Err(error) = stream.write_all(answer) {
                                assert_eq!(error.kind(), std::io::ErrorKind::WouldBlock);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        libc::close(epoll);
    }
    cpu.add(thread_cpu_seconds());
}

fn run(shape: Shape, arguments: &Arguments) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    let answer: Arc<[u8]> = vec![b'x'; arguments.answer_bytes].into();
    let server_cpu = Arc::new(CpuTally::default());
    let client_cpu = Arc::new(CpuTally::default());
    let cores = std::thread::available_parallelism().map_or(1, |count| count.get());

    let (request_bytes, answer_bytes, threads) = (
        arguments.request_bytes,
        arguments.answer_bytes,
        arguments.threads,
    );
    let server = {
        let (answer, server_cpu) = (answer.clone(), server_cpu.clone());
        std::thread::spawn(move || {
            let mut accepted: Vec<TcpStream> = Vec::new();
            for _ in 0..threads {
                let (stream, _) = listener.accept().expect("accept");
                stream.set_nodelay(true).expect("nodelay");
                accepted.push(stream);
            }
            let mut servers = Vec::new();
            match shape {
                Shape::Blocking => {
                    for stream in accepted {
                        let (answer, cpu) = (answer.clone(), server_cpu.clone());
                        servers.push(std::thread::spawn(move || {
                            serve_blocking(stream, request_bytes, &answer, &cpu)
                        }));
                    }
                }
                Shape::Epoll | Shape::EpollPinned => {
                    let mut shares: Vec<Vec<TcpStream>> = (0..cores).map(|_| Vec::new()).collect();
                    for (index, stream) in accepted.into_iter().enumerate() {
                        shares[index % cores].push(stream);
                    }
                    for (core, share) in shares.into_iter().enumerate() {
                        let (answer, cpu) = (answer.clone(), server_cpu.clone());
                        let pinned = matches!(shape, Shape::EpollPinned);
                        servers.push(std::thread::spawn(move || {
                            if pinned {
                                pin_to_core(core);
                            }
                            serve_epoll(share, request_bytes, &answer, &cpu)
                        }));
                    }
                }
            }
            for server in servers {
                server.join().expect("server thread");
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let round_trips = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, round_trips, cpu) = (stop.clone(), round_trips.clone(), client_cpu.clone());
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(address).expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let request = vec![b'q'; request_bytes];
                let mut received = vec![0u8; answer_bytes];
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&request).expect("request");
                    stream.read_exact(&mut received).expect("answer");
                    done += 1;
                }
                round_trips.fetch_add(done, Ordering::Relaxed);
                cpu.add(thread_cpu_seconds());
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(arguments.seconds));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().expect("client thread");
    }
    let elapsed = started.elapsed().as_secs_f64();
    server.join().expect("server");
    let total = round_trips.load(Ordering::Relaxed) as f64;
    Outcome {
        round_trips_per_second: total / elapsed,
        client_cpu_microseconds: client_cpu.total() / total * 1e6,
        server_cpu_microseconds: server_cpu.total() / total * 1e6,
    }
}

fn main() {
    let arguments = Arguments::parse();
    let machine = machine::describe(std::path::Path::new("/tmp"));
    let mut rows = Vec::new();
    let mut report = format!(
        "# Loopback ceiling: echo servers that do no work\n\n\
         Machine: {} cores ({}), {} GiB, kernel {}.\n\n\
         {} client threads, one connection and one request in flight each; \
         {}-byte requests, {}-byte answers; {} s per shape. CPU per round trip \
         is each side's threads' own CPU time (user and kernel) over the round trips.\n\n\
         | server shape | round trips/s | client CPU µs per round trip | server CPU µs per round trip |\n\
         |---|---:|---:|---:|\n",
        machine["cores"],
        machine["cpu"].as_str().unwrap_or(""),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or(""),
        arguments.threads,
        arguments.request_bytes,
        arguments.answer_bytes,
        arguments.seconds,
    );
    for shape in [Shape::Blocking, Shape::Epoll, Shape::EpollPinned] {
        eprintln!("{}…", shape.describe());
        let outcome = run(shape, &arguments);
        report.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.1} |\n",
            shape.describe(),
            outcome.round_trips_per_second,
            outcome.client_cpu_microseconds,
            outcome.server_cpu_microseconds,
        ));
        rows.push(json!({
            "shape": shape.describe(),
            "round_trips_per_second": outcome.round_trips_per_second,
            "client_cpu_microseconds": outcome.client_cpu_microseconds,
            "server_cpu_microseconds": outcome.server_cpu_microseconds,
        }));
    }
    println!("{report}");
    if let Some(output) = &arguments.output {
        std::fs::write(output, &report).expect("write the report");
        let document = json!({
            "machine": machine,
            "threads": arguments.threads,
            "request_bytes": arguments.request_bytes,
            "answer_bytes": arguments.answer_bytes,
            "seconds": arguments.seconds,
            "shapes": rows,
        });
        std::fs::write(
            output.with_extension("json"),
            serde_json::to_string_pretty(&document).expect("json"),
        )
        .expect("write the JSON report");
    }
}
