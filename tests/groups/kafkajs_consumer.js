'use strict'
// A kafkajs 2.2.4 group consumer for tests/groups (the same events as consumer_proc.py).
//
// usage: node kafkajs_consumer.js SPEC.json
// SPEC: {bootstrap, group, topic, out, session_ms, heartbeat_ms}
// Appends JSON lines to SPEC.out: assigned / rec / commit / commit_failed / closed.
// kafkajs only speaks its own assignor ("RoundRobinAssigner"), so it groups with kafkajs only.
// Each batch is committed before the next is processed. SIGTERM: disconnect (LeaveGroup).

const fs = require('fs')
const path = require('path')
const { Kafka, logLevel } = require(path.join(__dirname, '..', 'js', 'node_modules', 'kafkajs'))

const RUN_MS_MAX = 240000

async function main () {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
  const fd = fs.openSync(spec.out, 'a')
  const write = (e, fields) => fs.writeSync(fd, JSON.stringify({ t: Date.now() / 1000, e, ...fields }) + '\n')
  const kafka = new Kafka({
    clientId: 'chronik-trio-kafkajs-group',
    brokers: [spec.bootstrap],
    logLevel: logLevel.NOTHING,
    retry: { retries: 20, initialRetryTime: 100, maxRetryTime: 1000 }
  })
  const consumer = kafka.consumer({
    groupId: spec.group,
    sessionTimeout: spec.session_ms,
    heartbeatInterval: spec.heartbeat_ms,
    rebalanceTimeout: 10000,
    maxWaitTimeInMs: 100,
    retry: { retries: 20, initialRetryTime: 100, maxRetryTime: 1000 }
  })
  let last = null
  consumer.on(consumer.events.GROUP_JOIN, e => {
    const parts = (e.payload.memberAssignment[spec.topic] || []).slice().sort((a, b) => a - b)
    if (JSON.stringify(parts) !== JSON.stringify(last)) {
      last = parts
      write('assigned', { parts })
    }
  })
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    await consumer.disconnect()
    write('closed', {})
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  setTimeout(stop, RUN_MS_MAX)
  await consumer.connect()
  await consumer.subscribe({ topic: spec.topic, fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
      if (!batch.messages.length) return
      for (const m of batch.messages) {
        write('rec', { p: batch.partition, o: Number(m.offset) })
        resolveOffset(m.offset)
      }
      const next = Number(batch.messages[batch.messages.length - 1].offset) + 1
      try {
        await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: String(next) }])
        write('commit', { offsets: { [batch.partition]: next } })
      } catch (err) {
        write('commit_failed', { error: String(err) })
      }
      await heartbeat()
    }
  })
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
