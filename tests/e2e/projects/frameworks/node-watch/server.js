// A plain Node.js dev server that `node --watch` restarts when a file changes.
const http = require('http')
http
  .createServer((req, res) => res.end('<!doctype html><h1>Hello from Node.js</h1>\n'))
  .listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1')
