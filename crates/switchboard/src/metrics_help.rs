//! `# HELP` for every metric the shell exports outside TURN and the
//! webhooks (which describe their own): an operator reading `/metrics`,
//! and Prometheus's own linter, should never meet a bare name.

/// Describes the metrics once, after the recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge};
    // Signaling core counters (copied from the core on every scrape).
    describe_counter!(
        "switchboard_requests_total",
        "Signaling requests taken from clients, of every type"
    );
    describe_counter!(
        "switchboard_messages_total",
        "Room messages (`message` requests and Socket.IO `message` events) accepted"
    );
    describe_counter!(
        "switchboard_deliveries_total",
        "Message copies handed to recipients (what acks count)"
    );
    describe_counter!(
        "switchboard_frames_total",
        "Frames queued to clients, of every type"
    );
    describe_counter!(
        "switchboard_sessions_started_total",
        "Sessions started (connects, and fresh sessions after a failed resume)"
    );
    describe_counter!(
        "switchboard_sessions_ended_total",
        "Sessions ended (left, grace expired, taken over, server stop)"
    );
    describe_counter!(
        "switchboard_resumes_total",
        "Sessions resumed on a new connection"
    );
    describe_counter!("switchboard_joins_total", "Room joins granted");
    describe_counter!(
        "switchboard_rooms_full_total",
        "Joins refused because the room was at rooms.max_peers"
    );
    describe_counter!("switchboard_calls_total", "Direct calls placed");
    describe_counter!(
        "switchboard_errors_total",
        "Error frames sent to clients, by error code"
    );
    describe_gauge!(
        "switchboard_sessions",
        "Sessions this node holds, connected or waiting for a resume"
    );
    describe_gauge!(
        "switchboard_sessions_connected",
        "Sessions with a live connection"
    );
    describe_gauge!(
        "switchboard_rooms",
        "Rooms with at least one member on this node"
    );
    describe_gauge!("switchboard_calls_ringing", "Direct calls ringing now");
    // Transports and the HTTP front.
    describe_counter!(
        "switchboard_ws_connections_total",
        "Native WebSocket connections accepted"
    );
    describe_gauge!(
        "switchboard_ws_connections",
        "Native WebSocket connections open"
    );
    describe_counter!(
        "switchboard_socketio_connections_total",
        "Socket.IO connections accepted"
    );
    describe_gauge!(
        "switchboard_socketio_connections",
        "Socket.IO connections open"
    );
    describe_counter!(
        "switchboard_socketio_events_in_total",
        "Socket.IO events received from clients"
    );
    describe_counter!(
        "switchboard_socketio_events_out_total",
        "Socket.IO events sent to clients"
    );
    describe_counter!(
        "switchboard_slow_reader_closes_total",
        "Connections closed (1013) because their client read too slowly"
    );
    describe_counter!(
        "switchboard_connections_refused_total",
        "Signaling connections refused at limits.max_connections or a per-IP limit"
    );
    describe_counter!(
        "switchboard_http_connections_refused_total",
        "HTTP connections refused, by reason (limits.max_http_connections, per-IP limit)"
    );
    describe_counter!(
        "switchboard_http_timeouts_total",
        "HTTP connections closed by a timeout, by phase (TLS handshake, request header, idle)"
    );
    describe_counter!(
        "switchboard_log_lines_dropped_total",
        "Log lines dropped because the log writer fell behind"
    );
    describe_counter!(
        "switchboard_cluster_backplane_down_total",
        "Times the link to the cluster's Redis was lost"
    );
    // The SFU (PROTOCOL.md §7), when media.listen is on.
    describe_gauge!("switchboard_sfu_rooms", "SFU rooms with at least one peer");
    describe_gauge!("switchboard_sfu_peers", "Peers in SFU rooms");
    describe_gauge!(
        "switchboard_sfu_peers_connected",
        "Peers in SFU rooms whose ICE and DTLS completed"
    );
    describe_gauge!(
        "switchboard_sfu_published_tracks",
        "Tracks published into SFU rooms"
    );
    describe_gauge!(
        "switchboard_sfu_forwarded_tracks",
        "Published tracks sent to a receiver, one per receiver"
    );
    describe_counter!(
        "switchboard_sfu_forwarded_frames_total",
        "Media frames the SFU forwarded, one per receiver"
    );
    describe_counter!(
        "switchboard_sfu_forwarded_bytes_total",
        "Payload bytes of the media frames the SFU forwarded"
    );
    describe_counter!(
        "switchboard_sfu_peers_failed_total",
        "SFU peers whose media failed (handshake deadline, unanswered offer, ICE lost)"
    );
    describe_counter!(
        "switchboard_sfu_dropped_datagrams_total",
        "Datagrams on the media port that no SFU peer took (garbage, unknown senders, over budget)"
    );
    describe_counter!(
        "switchboard_sfu_rate_limited_datagrams_total",
        "Datagrams of SFU peers dropped for exceeding media.peer_max_kbps or peer_max_datagrams_per_sec"
    );
    describe_counter!(
        "switchboard_sfu_signals_refused_total",
        "media requests refused (unavailable) because the SFU driver was behind"
    );
    describe_counter!(
        "switchboard_sfu_send_failures_total",
        "Datagrams dropped because the media socket's send buffer was full"
    );
    describe_counter!(
        "switchboard_admin_unauthorized_total",
        "Admin API requests refused for a missing or wrong token"
    );
}
