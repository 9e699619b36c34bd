// A line-driven @supabase/realtime-js client for tests/realtime.
//
// usage: node driver.mjs <realtime url, e.g. ws://127.0.0.1:PORT/realtime/v1> <apikey> [vsn]
// stdin:  one JSON command per line: {"id": 1, "op": "subscribe", ...}
// stdout: one JSON event per line: {"type": "ready"} first, then status/broadcast/presence/system
//         events as they happen, and {"type": "result", "id": 1, ...} when a command finishes.
// Receive times are wall-clock milliseconds (performance.timeOrigin + performance.now()) so the
// test can measure latency against the sender's clock on the same host.
import readline from 'node:readline'
import { RealtimeClient } from '@supabase/realtime-js'
import ws from 'ws'

const now = () => performance.timeOrigin + performance.now()

const [url, apikey, vsn = '2.0.0'] = process.argv.slice(2)
// RT_DEBUG=1 logs the client's own view of every push and receive to stderr.
const logger = process.env.RT_DEBUG ? (kind, msg) => process.stderr.write(`${now().toFixed(1)} ${kind} ${msg}\n`) : undefined
const client = new RealtimeClient(url, { params: { apikey }, transport: ws, vsn, timeout: 5000, logger })
const channels = new Map()

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')
const hex = (buffer) => Buffer.from(buffer).toString('hex')
const wire = (payload) => (payload instanceof ArrayBuffer ? { hex: hex(payload) } : payload)

const ops = {
  subscribe({ topic, config = {}, echo = null, postgres = [] }) {
    const channel = client.channel(topic, { config })
    for (const filter of postgres) channel.on('postgres_changes', filter, () => {})
    channel.on('broadcast', { event: '*' }, (message) => {
      emit({ type: 'broadcast', topic, event: message.event, payload: wire(message.payload), meta: message.meta, at: now() })
      if (echo && message.event === echo.from) {
        channel.send({ type: 'broadcast', event: echo.to, payload: message.payload })
      }
    })
    if (config.presence?.enabled) {
      channel.on('presence', { event: 'sync' }, () => emit({ type: 'presence', topic, state: channel.presenceState() }))
    }
    channel.on('system', {}, (payload) => emit({ type: 'system', topic, payload }))
    channels.set(topic, channel)
    return new Promise((resolve) => {
      channel.subscribe((status, error) => {
        emit({ type: 'status', topic, status, error: error?.message ?? null })
        resolve(status)
      })
    })
  },
  send({ topic, event, payload, hex: bytes = null, stamp = false }) {
    let body = bytes === null ? payload : new Uint8Array(Buffer.from(bytes, 'hex')).buffer
    if (stamp) body = { ...body, sent_at: now() }
    return channels.get(topic).send({ type: 'broadcast', event, payload: body })
  },
  async httpSend({ topic, event, payload }) {
    return (await channels.get(topic).httpSend(event, payload)).success
  },
  track: ({ topic, meta }) => channels.get(topic).track(meta),
  untrack: ({ topic }) => channels.get(topic).untrack(),
  unsubscribe: ({ topic }) => channels.get(topic).unsubscribe(),
  heartbeat() {
    // Resolves with the client's own verdict on the reply: "ok" only if the ref came back.
    return new Promise((resolve) => {
      client.onHeartbeat((status) => {
        if (status !== 'sent') resolve(status)
      })
      client.sendHeartbeat()
    })
  },
  setAuth: async ({ token }) => {
    await client.setAuth(token)
    return 'ok'
  },
  exit() {
    client.disconnect()
    setImmediate(() => process.exit(0))
    return 'bye'
  },
}

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const command = JSON.parse(line)
  try {
    emit({ type: 'result', id: command.id, value: await ops[command.op](command) })
  } catch (error) {
    emit({ type: 'result', id: command.id, error: String(error?.stack ?? error) })
  }
})
emit({ type: 'ready', vsn: client.vsn })
