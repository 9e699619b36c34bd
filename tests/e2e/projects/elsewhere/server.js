// A dev server that ignores PORT and HOST and listens where it likes, as some do.
const http = require('http')
http.createServer((req, res) => res.end('<h1>elsewhere</h1>\n')).listen(3999, '127.0.0.1')
