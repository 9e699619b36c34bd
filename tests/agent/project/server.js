// The dev server of the agent tests: plain HTTP plus a WebSocket echo, with no dependencies.
const crypto = require("crypto");
const fs = require("fs");
const http = require("http");

const port = Number(process.env.PORT);
const host = process.env.HOST;

const server = http.createServer((req, res) => {
  if (req.url === "/crash") {
    res.end("crashing\n", () => process.exit(3));
    return;
  }
  if (req.url === "/pid") {
    res.end(String(process.pid));
    return;
  }
  if (req.url === "/message") {
    fs.readFile("message.txt", (error, data) => res.end(error ? "no message\n" : data));
    return;
  }
  if (req.url === "/env") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(process.env));
    return;
  }
  if (req.url === "/headers") {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify(req.headers));
    return;
  }
  res.setHeader("content-type", "text/html");
  res.end(`<h1>hello from server.js</h1>\n`);
});

function frame(opcode, payload) {
  const length = payload.length;
  let header;
  if (length < 126) {
    header = Buffer.from([0x80 | opcode, length]);
  } else if (length < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 126;
    header.writeUInt16BE(length, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  return Buffer.concat([header, payload]);
}

server.on("upgrade", (req, socket) => {
  const key = req.headers["sec-websocket-key"];
  const accept = crypto.createHash("sha1").update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
  const offered = (req.headers["sec-websocket-protocol"] || "").split(",").map((p) => p.trim()).filter(Boolean);
  const lines = ["HTTP/1.1 101 Switching Protocols", "Upgrade: websocket", "Connection: Upgrade", `Sec-WebSocket-Accept: ${accept}`];
  if (offered.length) lines.push(`Sec-WebSocket-Protocol: ${offered[0]}`);
  socket.write(lines.join("\r\n") + "\r\n\r\n");
  let buffered = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2) {
      const opcode = buffered[0] & 0x0f;
      let length = buffered[1] & 0x7f;
      let offset = 2;
      if (length === 126) { length = buffered.readUInt16BE(2); offset = 4; }
      else if (length === 127) { length = Number(buffered.readBigUInt64BE(2)); offset = 10; }
      const masked = (buffered[1] & 0x80) !== 0;
      const total = offset + (masked ? 4 : 0) + length;
      if (buffered.length < total) return;
      const mask = masked ? buffered.subarray(offset, offset + 4) : null;
      const payload = Buffer.from(buffered.subarray(total - length, total));
      if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
      buffered = buffered.subarray(total);
      if (opcode === 0x8) { socket.end(frame(0x8, payload.subarray(0, 2))); return; }
      if (opcode === 0x9) { socket.write(frame(0xa, payload)); continue; }
      if (opcode === 0x1 || opcode === 0x2) socket.write(frame(opcode, payload));
    }
  });
  socket.on("error", () => {});
});

server.listen(port, host, () => console.log(`server.js listening on ${host}:${port}`));
