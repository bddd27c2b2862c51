//! [`CountingServer`]: a real HTTP/1.1 server on 127.0.0.1 (std only, a thread per
//! connection) that answers every request `200 OK` with a body naming its path, after an
//! optional delay, and counts the requests it saw — what a test of `http_fetch` caching
//! needs to prove how many requests reached the network.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A server counting the requests it answers. It runs until the test process ends.
pub struct CountingServer {
    url: String,
    hits: Arc<AtomicUsize>,
}

impl CountingServer {
    /// Starts a server on a free port of 127.0.0.1, answering each request after `delay`.
    pub fn start(delay: Duration) -> CountingServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free port on 127.0.0.1");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the listener's address")
        );
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || answer(stream, &counted, delay));
            }
        });
        CountingServer { url, hits }
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn answer(stream: TcpStream, hits: &AtomicUsize, delay: Duration) {
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut first = String::new();
    if reader.read_line(&mut first).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    hits.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(delay);
    let path = first.split_whitespace().nth(1).unwrap_or("/");
    let body = format!("{{\"path\":\"{path}\"}}");
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}
