// The official Foxglove WebSocket client (@foxglove/ws-protocol) against a server:
//   node client.js PORT SUBPROTOCOL SECONDS
// Prints one JSON line per event (open, serverInfo, advertise, message, publishRefused,
// status, error), then {"event": "done"}. It subscribes to every advertised channel and,
// to check that clients cannot publish, tries to advertise a channel of its own.
const { FoxgloveClient } = require("@foxglove/ws-protocol");
const WebSocket = require("ws");

const [port, subprotocol, seconds] = [process.argv[2], process.argv[3], Number(process.argv[4] || 10)];
const say = (event, data) => console.log(JSON.stringify({ event, ...data }));
const ws = new WebSocket(`ws://127.0.0.1:${port}`, [subprotocol]);
ws.on("unexpected-response", (_req, res) => { say("refused", { status: res.statusCode }); process.exit(1); });
const client = new FoxgloveClient({ ws });
const channels = new Map();
const counts = {};
client.on("open", () => say("open", { protocol: ws.protocol }));
client.on("serverInfo", (info) => {
  say("serverInfo", { name: info.name, capabilities: info.capabilities });
  try {
    client.advertise({ topic: "/cmd_vel", encoding: "json", schemaName: "x" });
    say("advertiseSent", {});
  } catch (e) {
    say("publishRefused", { reason: String(e && e.message) });
  }
});
client.on("status", (s) => say("status", { level: s.level, message: s.message }));
client.on("advertise", (list) => {
  for (const c of list) {
    say("advertise", { topic: c.topic, encoding: c.encoding, schemaName: c.schemaName });
    channels.set(client.subscribe(c.id), c);
  }
});
client.on("message", ({ subscriptionId, data }) => {
  const c = channels.get(subscriptionId);
  if (!c) return;
  counts[c.topic] = (counts[c.topic] || 0) + 1;
  if (counts[c.topic] === 1) {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    say("message", { topic: c.topic, bytes: bytes.length,
                     json: c.encoding === "json" ? JSON.parse(new TextDecoder().decode(bytes)) : null });
  }
});
client.on("error", (e) => say("error", { message: String(e && e.message) }));
setTimeout(() => { say("done", { counts }); client.close(); process.exit(0); }, seconds * 1000);
