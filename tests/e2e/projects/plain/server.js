// A dev server with no dependencies: `npm run dev` serves one page on PORT.
const http = require('http')
http
  .createServer((req, res) => res.end('<h1>plain</h1>\n'))
  .listen(Number(process.env.PORT), process.env.HOST || '127.0.0.1')
