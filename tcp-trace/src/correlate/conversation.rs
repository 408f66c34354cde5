//! Both ends of one TCP connection on this host, grouped for the ladder view.

use super::connection::{Connection, HalfOpenRequest, Role};
use super::hash::FastMap;
use super::norm;

/// One TCP connection seen from the client end, the server end, or both.
/// A socket whose role is unknown is put on the client side.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversation {
    pub client: Option<Connection>,
    pub server: Option<Connection>,
}

impl Conversation {
    /// A conversation holding one connection (on its side).
    pub fn single(c: Connection) -> Conversation {
        if c.role == Role::Server {
            Conversation {
                client: None,
                server: Some(c),
            }
        } else {
            Conversation {
                client: Some(c),
                server: None,
            }
        }
    }

    /// Both ends together (either order).
    pub fn pair(a: Connection, b: Connection) -> Conversation {
        if a.role == Role::Server && b.role != Role::Server {
            Conversation {
                client: Some(b),
                server: Some(a),
            }
        } else {
            Conversation {
                client: Some(a),
                server: Some(b),
            }
        }
    }

    /// Earliest timestamp of either end.
    pub fn first_ts_ns(&self) -> u64 {
        self.sides().map(|c| c.first_ts_ns).min().unwrap_or(0)
    }

    /// The ends present, client first.
    pub fn sides(&self) -> impl Iterator<Item = &Connection> {
        self.client.iter().chain(self.server.iter())
    }

    fn order_key(&self) -> (u64, u64) {
        let id = self.sides().map(|c| c.id).min().unwrap_or(0);
        (self.first_ts_ns(), id)
    }
}

/// Groups connections into conversations through their `peer` ids. Listeners are
/// left out, but a client without a peer that lacks its `peer_request` (the correlator
/// fills it while the listener is tracked) gets it from a listener's
/// `half_open_requests` here: same mirrored 4-tuple, first SYN-ACK retransmit within
/// the client's lifetime. The result is ordered by first timestamp, then id.
pub fn conversations(mut conns: Vec<Connection>) -> Vec<Conversation> {
    let requests: Vec<&HalfOpenRequest> = conns
        .iter()
        .filter_map(|c| c.listener.as_ref())
        .flat_map(|l| &l.half_open_requests)
        .collect();
    let found: Vec<(usize, HalfOpenRequest)> = if requests.is_empty() {
        Vec::new()
    } else {
        conns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.role == Role::Client && c.peer.is_none())
            .filter(|(_, c)| c.peer_request.is_none())
            .filter_map(|(k, c)| {
                let r = requests.iter().find(|r| answers(r, c))?;
                Some((k, (*r).clone()))
            })
            .collect()
    };
    for (k, r) in found {
        conns[k].peer_request = Some(r);
    }
    let mut joiner = ConversationJoiner::default();
    let mut out = Vec::new();
    for c in conns {
        if let Some(conv) = joiner.push(c) {
            out.push(conv);
        }
    }
    out.extend(joiner.flush());
    out.sort_by_key(Conversation::order_key);
    out
}

/// `r` is the server side of client `c`: mirrored 4-tuple, first SYN-ACK retransmit
/// between the client's first and last event.
fn answers(r: &HalfOpenRequest, c: &Connection) -> bool {
    let (Some(ca), Some(cd)) = (c.saddr, c.daddr) else {
        return false;
    };
    let tuple = (norm(r.daddr), r.dport, norm(r.saddr), r.sport);
    tuple == (norm(ca), c.sport, norm(cd), c.dport)
        && c.sport != 0
        && r.synack_retransmit_ts_ns
            .first()
            .is_some_and(|&t| t >= c.first_ts_ns && t <= c.last_ts_ns)
}

/// Streaming form of [`conversations`]: a connection whose peer has not been emitted
/// yet waits here until it is (the correlator always emits both eventually, at the
/// latest at flush or eviction). A client's `peer_request` is what the correlator
/// attached.
#[derive(Default, Debug)]
pub struct ConversationJoiner {
    /// Waiting connections by their own id (ids are the correlator's counter: the
    /// fast hasher, not SipHash).
    waiting: FastMap<u64, Connection>,
}

impl ConversationJoiner {
    /// Returns a complete conversation when `c` completes one; `None` while waiting
    /// for its peer, and for listeners.
    pub fn push(&mut self, c: Connection) -> Option<Conversation> {
        if c.role == Role::Listener {
            return None;
        }
        match c.peer {
            None => Some(Conversation::single(c)),
            Some(peer) => match self.waiting.remove(&peer) {
                Some(p) => Some(Conversation::pair(p, c)),
                None => {
                    self.waiting.insert(c.id, c);
                    None
                }
            },
        }
    }

    /// Connections still waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Everything still waiting, each alone, in id order.
    pub fn flush(&mut self) -> Vec<Conversation> {
        let mut v: Vec<Connection> = self.waiting.drain().map(|(_, c)| c).collect();
        v.sort_by_key(|c| c.id);
        v.into_iter().map(Conversation::single).collect()
    }
}
