// A dev server whose page needs a package that the project's package manager installed.
const http = require('http')
const isNumber = require('is-number')
http
  .createServer((req, res) => res.end(`<h1>is-number says ${isNumber(7)}</h1>\n`))
  .listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1')
