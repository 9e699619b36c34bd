// A dev server that misbehaves on request: /hog allocates memory until the kernel stops it,
// /bomb forks processes until the pids limit stops it.
const http = require('http')
const { spawn } = require('child_process')
const port = Number(process.env.PORT)
const kept = []
http
  .createServer((req, res) => {
    if (req.url === '/hog') {
      res.end('allocating\n')
      setImmediate(() => {
        for (;;) kept.push(Buffer.alloc(16 << 20, 1))
      })
      return
    }
    if (req.url === '/bomb') {
      const bomb = spawn('sh', ['-c', 'bomb() { bomb | bomb & }; bomb; sleep 30'], { stdio: 'ignore' })
      bomb.on('error', () => {})
      res.end('forking\n')
      return
    }
    res.end('<h1>hog ready</h1>\n')
  })
  .listen(port, '127.0.0.1')
