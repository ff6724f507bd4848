//! One Lighthouse's session loop: connect (overlapping attempts,
//! [`reconnect::race`]; QUIC, or TCP where UDP is blocked), authenticate
//! with this seat's sync point, serve the session, repeat, until the node
//! is removed or the Lighthouse is no longer one of the Flatnet's.

use std::{
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use flatnet_lighthouse::{
    client::{authenticate, JoinError, Joined},
    link::Link,
    server::{spawn_frame_reader, write_frame},
};
use flatnet_wire::lighthouse::{LhErrorCode, LighthouseMsg, NodeMsg, SyncPoint};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    jitter, local_addrs, lock, reconnect,
    seat::{Seat, PING_SEVERAL, REFUSED_RETRY, SILENT_END},
    transport, Backoff, LhClient, JOIN_TIMEOUT, LOCAL_ADDRS_EVERY, PING_EVERY, RECONNECT_MAX,
};

impl LhClient {
    pub(super) async fn run_seat(self: Arc<Self>, seat: Arc<Seat>) {
        let Some(endpoint) = self.endpoint.get().cloned() else {
            return;
        };
        let mut short_sessions = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut last_logged: Option<String> = None;
        let address = seat.address.clone();
        loop {
            if self.removed.load(Ordering::Relaxed) || seat.retired.load(Ordering::Relaxed) {
                return;
            }
            let attempt = || {
                let (endpoint, address, fingerprint, tcp) = (
                    endpoint.clone(),
                    seat.address.clone(),
                    seat.fingerprint.clone(),
                    seat.tcp.clone(),
                );
                async move { transport::connect_any(&endpoint, &address, &tcp, &fingerprint).await }
            };
            let upgraded = lock(&seat.next).take();
            let conn = match upgraded {
                Some(c) => c,
                None => {
                    let cadence = Backoff::new(Duration::from_secs(1), RECONNECT_MAX);
                    reconnect::race(attempt, cadence, jitter, |err: String| {
                        if last_logged.as_deref() != Some(err.as_str()) {
                            warn!(lighthouse = %address, "cannot reach the Lighthouse: {err}; still trying");
                            last_logged = Some(err.clone());
                        }
                        seat.set_state("reconnecting", Some(err));
                    })
                    .await
                }
            };
            if seat.retired.load(Ordering::Relaxed) {
                conn.close(0, b"retired");
                return;
            }
            let local = local_addrs(self.port, self.cidr);
            let began = Instant::now();
            let since = lock(&self.book).syncs.get(&seat.id).copied();
            let auth = authenticate(
                conn,
                &self.identity.secret,
                &self.name,
                None,
                local.clone(),
                since,
            );
            let mut refused = false;
            let err = match tokio::time::timeout(JOIN_TIMEOUT, auth).await {
                Ok(Ok(j)) => {
                    last_logged = None;
                    crate::metrics::counters().lh_sessions.inc();
                    let r = self.clone().session(&seat, j, local).await;
                    crate::metrics::counters().lh_session_ends.inc();
                    *lock(&seat.link) = None;
                    *lock(&seat.outbox) = None;
                    r.err().unwrap_or_else(|| "connection closed".into())
                }
                Ok(Err(e)) => {
                    if let JoinError::Refused {
                        code: LhErrorCode::Removed | LhErrorCode::BadToken,
                        ..
                    } = &e
                    {
                        // Our key is unknown there: removed while we were
                        // away (we send no token once joined), or, with
                        // several Lighthouses, not seen there yet.
                        refused = true;
                    }
                    e.to_string()
                }
                Err(_) => format!(
                    "the Lighthouse did not finish the join within {} s",
                    JOIN_TIMEOUT.as_secs()
                ),
            };
            if refused && !self.any_connected() {
                self.removed_now(&err);
                return;
            }
            if self.removed.load(Ordering::Relaxed) {
                return;
            }
            if refused {
                // Another Lighthouse still has us: this one has not seen our
                // join yet, or our removal is on its way to that one too.
                warn!(lighthouse = %address, "the Lighthouse does not know this node yet ({err}); trying again");
                seat.set_state("reconnecting", Some(err));
                tokio::time::sleep(REFUSED_RETRY).await;
                continue;
            }
            if lock(&seat.next).is_some() {
                // Moving from TCP to QUIC: at once.
                info!(lighthouse = %address, "{err}");
                continue;
            }
            warn!(lighthouse = %address, "Lighthouse session: {err}; reconnecting");
            seat.set_state("reconnecting", Some(err));
            let wait = reconnect::after_session(began.elapsed(), &mut short_sessions, jitter());
            tokio::time::sleep(wait).await;
        }
    }

    async fn session(
        self: Arc<Self>,
        seat: &Arc<Seat>,
        j: Joined,
        mut local: Vec<SocketAddr>,
    ) -> Result<(), String> {
        let Joined {
            conn,
            mut send,
            recv,
            node_id,
            subnet,
            cidr,
            observed,
            peers,
            removed,
            delta,
            sync,
            lighthouses,
        } = j;
        let sync_kind = if delta { "delta" } else { "full list" };
        let transport = conn.transport();
        info!(
            lighthouse = %seat.address, node_id, %subnet, %observed, peers = peers.len(),
            removed = removed.len(), transport, "connected to the Lighthouse ({sync_kind})"
        );
        if transport == "tcp" {
            warn!(
                lighthouse = %seat.address,
                "UDP to the Lighthouse is blocked on this network: its session and relayed \
                 traffic go over TCP; QUIC is tried again every {} s",
                transport::UPGRADE_EVERY.as_secs()
            );
        }
        if subnet != self.subnet || cidr != self.cidr {
            warn!(
                %subnet, current = %self.subnet,
                "the Lighthouse now allocates a different subnet; restart flatnetd to use it"
            );
        }
        {
            let mut st = lock(&self.st);
            st.node_id = node_id;
            st.subnet = subnet;
            st.cidr = cidr;
        }
        {
            let mut s = lock(&seat.status);
            s.node_id = Some(node_id);
            s.observed = Some(observed);
            s.transport = Some(transport);
        }
        lock(&self.punch).set_my_public_ip(observed.ip());
        seat.set_state("connected", None);
        *lock(&seat.link) = Some(conn.clone());
        seat.heard();
        self.on_peers(&seat.id, peers, &removed, !delta, sync);
        self.follow_lighthouses(&lighthouses);
        let (tx, mut outbox) = mpsc::unbounded_channel();
        *lock(&seat.outbox) = Some(tx);
        let (reader, mut frames) = spawn_frame_reader::<LighthouseMsg, _>(recv);
        // With several Lighthouses, a dead one must be noticed within
        // seconds (relay and punching move to another): ping more often.
        let several = self.seats().len() > 1;
        let mut ping = tokio::time::interval(if several { PING_SEVERAL } else { PING_EVERY });
        let mut addrs = tokio::time::interval(LOCAL_ADDRS_EVERY);
        addrs.tick().await;
        // Over TCP: try QUIC again in the background, and move to it.
        let quic_back = async {
            match (&conn, self.endpoint.get()) {
                (Link::Tcp(_), Some(ep)) => {
                    transport::quic_again(ep, &seat.address, &seat.fingerprint).await
                }
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(quic_back);
        let result = loop {
            tokio::select! {
                f = frames.recv() => match f {
                    Some(Ok(m)) => {
                        seat.heard();
                        if let Err(e) = self.on_message(seat, m) { break Err(e) }
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err("control stream closed".into()),
                },
                m = outbox.recv() => if let Some(m) = m {
                    if let Err(e) = write_frame(&mut send, &m).await { break Err(e) }
                },
                d = conn.read_datagram() => match d {
                    Ok(d) => {
                        seat.heard();
                        self.relayed(&d)
                    }
                    Err(e) => break Err(e.to_string()),
                },
                _ = ping.tick() => {
                    let quiet = seat.quiet_for(Instant::now());
                    if several && quiet >= SILENT_END {
                        break Err(format!(
                            "no answer from the Lighthouse for {} s",
                            quiet.as_secs()
                        ));
                    }
                    if let Err(e) = write_frame(&mut send, &NodeMsg::Ping).await { break Err(e) }
                }
                l = &mut quic_back => {
                    *lock(&seat.next) = Some(l);
                    break Err("UDP to the Lighthouse works again: moving the session from TCP to QUIC".into());
                }
                _ = addrs.tick() => {
                    let now = local_addrs(self.port, self.cidr);
                    if now != local {
                        local = now;
                        if let Err(e) = write_frame(&mut send, &NodeMsg::Update { local_addrs: local.clone() }).await {
                            break Err(e);
                        }
                    }
                }
            }
        };
        reader.abort();
        conn.close(0, b"bye");
        lock(&seat.status).transport = None;
        result
    }

    fn on_message(&self, seat: &Seat, m: LighthouseMsg) -> Result<(), String> {
        match m {
            LighthouseMsg::Peers {
                upsert,
                remove,
                version,
            } => {
                // A round's last frame says how far the list now goes.
                let epoch = lock(&self.book).syncs.get(&seat.id).map(|p| p.epoch);
                let sync = epoch
                    .zip(version)
                    .map(|(epoch, version)| SyncPoint { epoch, version });
                self.on_peers(&seat.id, upsert, &remove, false, sync)
            }
            LighthouseMsg::PunchNow { peer, endpoints } => {
                debug!(peer, ?endpoints, "punch now");
                lock(&self.punch).punch_now(peer, &endpoints, Instant::now());
            }
            LighthouseMsg::Pong {
                observed,
                lighthouses,
            } => {
                let moved = lock(&seat.status).observed.replace(observed) != Some(observed);
                if moved {
                    info!(%observed, lighthouse = %seat.address, "our public endpoint changed");
                    lock(&self.punch).set_my_public_ip(observed.ip());
                }
                // A Lighthouse was added or retired meanwhile.
                self.follow_lighthouses(&lighthouses);
            }
            LighthouseMsg::Error { code, message } => {
                if code == LhErrorCode::Removed {
                    self.removed_now(&message);
                }
                return Err(format!("the Lighthouse said: {message}"));
            }
            other => debug!(
                kind = other.kind(),
                "unexpected message from the Lighthouse"
            ),
        }
        Ok(())
    }
}
