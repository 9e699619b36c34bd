import { useState } from 'react'

export default function App() {
  const [count, setCount] = useState(0)
  return (
    <main>
      <h1>Hello from Velocity</h1>
      <p>Edit <code>src/App.jsx</code> and the preview updates as you type.</p>
      <button onClick={() => setCount((c) => c + 1)}>Count is {count}</button>
    </main>
  )
}
