//! Free TCP ports on 127.0.0.1.
use std::collections::VecDeque;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports handed out recently by this process. The OS may give a just-released port to the next
/// `bind(0)`, and two servers started back to back must not get the same one.
static RECENT: Mutex<VecDeque<u16>> = Mutex::new(VecDeque::new());
const REMEMBERED: usize = 256;

/// A TCP port that is free on 127.0.0.1 right now and was not handed out recently by this
/// process. Between this call and the server's `bind` another program may take it; callers that
/// can tell (Docker's "port is already allocated") retry with a new one.
pub fn free_port() -> u16 {
    let mut recent = RECENT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .expect("binding 127.0.0.1:0 must work on any host with a loopback interface");
        if recent.contains(&port) {
            continue;
        }
        if recent.len() == REMEMBERED {
            recent.pop_front();
        }
        recent.push_back(port);
        return port;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_bindable_and_not_repeated() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(
            unique.len(),
            ports.len(),
            "a port was handed out twice: {ports:?}"
        );
        for port in ports.iter().take(5) {
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).expect("handed-out port is free");
        }
    }
}
