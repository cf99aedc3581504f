'use strict'
// kafkajs 2.2.4 transactions for tests/integration/test_txn_clients.py.
//
// usage: node kafkajs_txn.js SPEC.json OUT.json
//
// SPEC: { brokers: ["127.0.0.1:PORT"], transactionalId, topic, partitions,
//         commit: [values], abort: [values], offsets: {group, topic, partition, offset} }
// One transaction sends `commit` (value i to partition i % partitions) and the offsets
// (sendOffsets), and commits; a second sends `abort` and aborts. OUT: { ok: true }.

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

async function main () {
  const [specPath, outPath] = process.argv.slice(2)
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'))
  const kafka = new Kafka({
    clientId: 'chronik-trio-kafkajs-txn',
    brokers: spec.brokers,
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 8, initialRetryTime: 200, maxRetryTime: 3000 }
  })
  const producer = kafka.producer({ transactionalId: spec.transactionalId, maxInFlightRequests: 1, idempotent: true })
  await producer.connect()
  const messages = values => values.map((v, i) => ({ value: v, partition: i % spec.partitions }))
  const txn = await producer.transaction()
  await txn.send({ topic: spec.topic, messages: messages(spec.commit) })
  const o = spec.offsets
  await txn.sendOffsets({
    consumerGroupId: o.group,
    topics: [{ topic: o.topic, partitions: [{ partition: o.partition, offset: String(o.offset) }] }]
  })
  await txn.commit()
  const aborted = await producer.transaction()
  await aborted.send({ topic: spec.topic, messages: messages(spec.abort) })
  await aborted.abort()
  await producer.disconnect()
  fs.writeFileSync(outPath, JSON.stringify({ ok: true }))
}

main().catch(err => {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
})
