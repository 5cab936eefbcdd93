//! The TURN core's counters as Prometheus metrics, each with its `# HELP`.

use switchboard_turn::Metrics;

/// Name, help, value.
type Row = (&'static str, &'static str, u64);

fn gauges(m: &Metrics) -> [Row; 3] {
    [
        (
            "switchboard_turn_allocations",
            "Live TURN allocations.",
            m.allocations,
        ),
        (
            "switchboard_turn_permissions",
            "Live TURN permissions over all allocations.",
            m.permissions,
        ),
        (
            "switchboard_turn_channels",
            "Live TURN channel bindings over all allocations.",
            m.channels,
        ),
    ]
}

fn counters(m: &Metrics, send_failures: u64) -> [Row; 14] {
    [
        (
            "switchboard_turn_send_failures_total",
            "Datagrams and stream frames dropped on a full socket buffer or connection queue.",
            send_failures,
        ),
        (
            "switchboard_turn_allocations_created_total",
            "TURN allocations created.",
            m.allocations_created,
        ),
        (
            "switchboard_turn_allocations_expired_total",
            "TURN allocations that ended by timing out.",
            m.allocations_expired,
        ),
        (
            "switchboard_turn_allocations_revoked_total",
            "TURN allocations ended by an operator (admin API).",
            m.allocations_revoked,
        ),
        (
            "switchboard_turn_allocation_events_dropped_total",
            "Allocation created/ended events lost to a full queue in the TURN core.",
            m.allocation_events_dropped,
        ),
        (
            "switchboard_turn_draining_refusals_total",
            "Allocate requests refused (508) while the node drains.",
            m.draining_refusals,
        ),
        (
            "switchboard_turn_binding_requests_total",
            "STUN Binding requests answered.",
            m.binding_requests,
        ),
        (
            "switchboard_turn_auth_failures_total",
            "TURN requests refused for authentication (401, 438, 441).",
            m.auth_failures,
        ),
        (
            "switchboard_turn_denied_peers_total",
            "Peer addresses refused by the peer policy (403).",
            m.denied_peers,
        ),
        (
            "switchboard_turn_quota_rejections_total",
            "Allocate requests refused by a quota (486).",
            m.quota_rejections,
        ),
        (
            "switchboard_turn_relay_bind_failures_total",
            "Relay sockets that could not be bound (508).",
            m.relay_bind_failures,
        ),
        (
            "switchboard_turn_dropped_total",
            "TURN inputs dropped: undecodable, or without allocation, permission or channel.",
            m.dropped,
        ),
        (
            "switchboard_turn_oversized_requests_total",
            "STUN requests over turn.max_request_bytes (400).",
            m.oversized_requests,
        ),
        (
            "switchboard_turn_challenges_dropped_total",
            "401/438 challenges not sent because their source was over its rate.",
            m.challenges_dropped,
        ),
    ]
}

const RELAYED_PACKETS: &str = "switchboard_turn_relayed_packets_total";
const RELAYED_BYTES: &str = "switchboard_turn_relayed_bytes_total";

/// Describes every metric. On every export rather than once: a handful of
/// map writes per scrape, and a description given before the process's
/// recorder is installed would otherwise be lost for good.
fn describe() {
    let none = Metrics::default();
    for (name, help, _) in gauges(&none) {
        metrics::describe_gauge!(name, help);
    }
    for (name, help, _) in counters(&none, 0) {
        metrics::describe_counter!(name, help);
    }
    metrics::describe_counter!(
        RELAYED_PACKETS,
        "Packets relayed, by direction (to_peer, to_client)."
    );
    metrics::describe_counter!(
        RELAYED_BYTES,
        "Payload bytes relayed, by direction (to_peer, to_client)."
    );
}

/// Pushes a snapshot into the process's `metrics` recorder.
pub(super) fn export(m: &Metrics, send_failures: u64) {
    describe();
    for (name, _, value) in gauges(m) {
        metrics::gauge!(name).set(value as f64);
    }
    for (name, _, value) in counters(m, send_failures) {
        metrics::counter!(name).absolute(value);
    }
    let relayed = [
        ("to_peer", m.packets_to_peers, m.bytes_to_peers),
        ("to_client", m.packets_to_clients, m.bytes_to_clients),
    ];
    for (direction, packets, bytes) in relayed {
        metrics::counter!(RELAYED_PACKETS, "direction" => direction).absolute(packets);
        metrics::counter!(RELAYED_BYTES, "direction" => direction).absolute(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_and_its_value() {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let mut m = Metrics::default();
        m.allocations = 2;
        m.allocations_revoked = 5;
        m.draining_refusals = 7;
        metrics::with_local_recorder(&recorder, || export(&m, 3));
        let text = handle.render();
        let names = gauges(&m)
            .into_iter()
            .chain(counters(&m, 3))
            .map(|(name, _, _)| name)
            .chain([RELAYED_PACKETS, RELAYED_BYTES]);
        for name in names {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}:\n{text}");
        }
        for line in [
            "switchboard_turn_allocations 2",
            "switchboard_turn_allocations_revoked_total 5",
            "switchboard_turn_draining_refusals_total 7",
            "switchboard_turn_send_failures_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
        }
    }
}
