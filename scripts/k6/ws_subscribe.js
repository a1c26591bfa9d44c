// k6: VUS WebSocket subscribers on one topic, each open for HOLD seconds, counting the
// messages they receive (a cross-check of fan-out with a third-party client).
//
//   k6 run -e URL=ws://127.0.0.1:8080/ws?topic=bench -e VUS=100 -e HOLD=10 \
//          --summary-export out.json scripts/k6/ws_subscribe.js
//
// Publish to the topic meanwhile (ringcast publish, scripts/lib/benchtool.py publish,
// wrk with scripts/wrk/publish.lua). Metrics: ws_messages_received (Counter),
// ws_subscribed (Counter of sockets that opened), k6's own ws_* metrics.
import ws from "k6/ws";
import { check } from "k6";
import { Counter } from "k6/metrics";

const URL = __ENV.URL || "ws://127.0.0.1:8080/ws?topic=bench";
const VUS = Number(__ENV.VUS || 100);
const HOLD = Number(__ENV.HOLD || 10);

const received = new Counter("ws_messages_received");
const subscribed = new Counter("ws_subscribed");

export const options = {
  scenarios: {
    subscribe: {
      executor: "per-vu-iterations",
      vus: VUS,
      iterations: 1,
      maxDuration: `${HOLD + 30}s`,
    },
  },
  // Only the summary matters; no thresholds so that a smoke run never fails on them.
};

export default function () {
  const res = ws.connect(URL, {}, (socket) => {
    socket.on("open", () => subscribed.add(1));
    socket.on("message", () => received.add(1));
    socket.setTimeout(() => socket.close(), HOLD * 1000);
  });
  check(res, { "upgraded (101)": (r) => r && r.status === 101 });
}
