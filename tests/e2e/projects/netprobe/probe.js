// A dev server that tries the network from inside its sandbox, on request, and says what happened.
// GET /whoami                      this preview's project, netns and network interfaces
// GET /tcp?host=H&port=P           a direct TCP connection
// GET /udp?host=H&port=P           one direct UDP datagram
// GET /unix?path=P                 a unix socket connection (a leading "@" means an abstract name)
// GET /http?host=H&port=P&path=X   a direct HTTP GET
// GET /proxy-http?url=U            a plain-HTTP request for U through the proxy in HTTP_PROXY
// GET /proxy-connect?host=H&port=P a CONNECT through the proxy, then a GET inside the tunnel
const http = require('http')
const net = require('net')
const dgram = require('dgram')
const fs = require('fs')

const port = Number(process.env.PORT)
const proxy = new URL(process.env.HTTP_PROXY || 'http://127.0.0.1:3128')
const TIMEOUT_MS = 3000

function outcome(done) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, error: 'TIMEOUT' }), TIMEOUT_MS)
    done((result) => {
      clearTimeout(timer)
      resolve(result)
    })
  })
}

function tcp(host, p) {
  return outcome((settle) => {
    const socket = net.connect({ host, port: p })
    socket.on('connect', () => { socket.destroy(); settle({ ok: true }) })
    socket.on('error', (e) => settle({ ok: false, error: e.code }))
  })
}

function unix(path) {
  return outcome((settle) => {
    const socket = net.connect({ path: path.startsWith('@') ? '\0' + path.slice(1) : path })
    socket.on('connect', () => { socket.destroy(); settle({ ok: true }) })
    socket.on('error', (e) => settle({ ok: false, error: e.code }))
  })
}

function udp(host, p) {
  return outcome((settle) => {
    const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4')
    socket.send(Buffer.from('probe datagram'), p, host, (e) => {
      socket.close()
      settle(e ? { ok: false, error: e.code } : { ok: true })
    })
  })
}

function get(options) {
  return outcome((settle) => {
    const request = http.request(options, (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => settle({ ok: true, status: res.statusCode, body }))
    })
    request.on('error', (e) => settle({ ok: false, error: e.code }))
    request.end()
  })
}

function connectThrough(host, p) {
  return outcome((settle) => {
    const request = http.request({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: `${host}:${p}` })
    request.on('connect', (res, socket, head) => {
      if (res.statusCode !== 200) {
        let body = head.toString()
        socket.on('data', (c) => (body += c))
        socket.on('end', () => settle({ ok: true, status: res.statusCode, body }))
        socket.on('error', () => settle({ ok: true, status: res.statusCode, body }))
        return
      }
      let inner = head.toString()
      socket.on('data', (c) => (inner += c))
      socket.on('end', () => settle({ ok: true, status: 200, inner }))
      socket.on('error', (e) => settle({ ok: false, status: 200, error: e.code, inner }))
      socket.write(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
    })
    request.on('response', (res) => {
      let body = ''
      res.on('data', (c) => (body += c))
      res.on('end', () => settle({ ok: true, status: res.statusCode, body }))
    })
    request.on('error', (e) => settle({ ok: false, error: e.code }))
    request.end()
  })
}

async function answer(url) {
  const q = url.searchParams
  switch (url.pathname) {
    case '/whoami':
      return {
        project: process.env.PROJECT_ID,
        netns: fs.readlinkSync('/proc/self/ns/net'),
        interfaces: fs.readFileSync('/proc/net/dev', 'utf8').split('\n').slice(2)
          .map((l) => l.split(':')[0].trim()).filter(Boolean),
        proxy: process.env.HTTP_PROXY || null,
        agentToken: 'AGENT_TOKEN' in process.env,
      }
    case '/tcp': return tcp(q.get('host'), Number(q.get('port')))
    case '/udp': return udp(q.get('host'), Number(q.get('port')))
    case '/unix': return unix(q.get('path'))
    case '/http': return get({ host: q.get('host'), port: Number(q.get('port')), path: q.get('path') || '/' })
    case '/proxy-http': {
      const target = new URL(q.get('url'))
      return get({ host: proxy.hostname, port: proxy.port, path: target.href, headers: { host: target.host } })
    }
    case '/proxy-connect': return connectThrough(q.get('host'), Number(q.get('port')))
    default: return { hello: 'netprobe' }
  }
}

http
  .createServer((req, res) => {
    answer(new URL(req.url, 'http://probe')).then((result) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify(result))
    })
  })
  .listen(port, '127.0.0.1')
