'use strict'
// kafkajs 2.2.4 (installed in tests/js) for tests/replication: create one topic with a
// replication factor, produce records with acks=-1, and write the offset each was told.
//
// usage (cwd tests/js, so require finds kafkajs): node kafkajs_rf3.js SPEC.json OUT.json
// SPEC: { brokers, topic, partitions, replicationFactor, chunk,
//         records: [{p, k, v, h: [[key, b64]...], t}] }        (k, v: base64 or null)
// OUT:  { created, offsets: [offset per record] }
//
// A send() to one partition answers with its baseOffset, and kafkajs puts the messages of
// one send() into one batch in the order given (as in tests/js/kafkajs_client.js).

const fs = require('fs')
const path = require('path')
const { Kafka, logLevel } = require(path.join(process.cwd(), 'node_modules', 'kafkajs'))

const fromB64 = x => (x === null ? null : Buffer.from(x, 'base64'))

function toHeaders (pairs) {
  const out = {}
  for (const [k, v] of pairs) {
    const buf = fromB64(v)
    if (!(k in out)) out[k] = buf
    else if (Array.isArray(out[k])) out[k].push(buf)
    else out[k] = [out[k], buf]
  }
  return out
}

async function main () {
  const [specPath, outPath] = process.argv.slice(2)
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'))
  const kafka = new Kafka({
    clientId: 'chronik-trio-replication-test',
    brokers: spec.brokers,
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 3000 }
  })
  const out = { created: null, offsets: new Array(spec.records.length).fill(null) }
  const admin = kafka.admin()
  await admin.connect()
  try {
    out.created = await admin.createTopics({
      topics: [{ topic: spec.topic, numPartitions: spec.partitions, replicationFactor: spec.replicationFactor }],
      waitForLeaders: true,
      timeout: 30000
    })
  } finally {
    await admin.disconnect()
  }
  const producer = kafka.producer({ allowAutoTopicCreation: false })
  await producer.connect()
  try {
    // One send() per partition (in parallel): when kafkajs retries a send after a retriable
    // error on some partitions, its result may lack the partitions that had succeeded.
    for (let start = 0; start < spec.records.length; start += spec.chunk) {
      const byPartition = {}
      for (let i = start; i < Math.min(start + spec.chunk, spec.records.length); i++) {
        const r = spec.records[i];
        (byPartition[r.p] = byPartition[r.p] || []).push(i)
      }
      await Promise.all(Object.entries(byPartition).map(async ([p, indexes]) => {
        const res = await producer.send({
          topic: spec.topic,
          acks: -1,
          timeout: 30000,
          messages: indexes.map(i => {
            const r = spec.records[i]
            return { partition: r.p, key: fromB64(r.k), value: fromB64(r.v), headers: toHeaders(r.h), timestamp: String(r.t) }
          })
        })
        const mine = res.filter(m => m.partition === Number(p))
        if (mine.length !== 1 || mine[0].errorCode !== 0) {
          throw new Error(`produce ${spec.topic}/${p}: ${JSON.stringify(res)}`)
        }
        let next = BigInt(mine[0].baseOffset)
        for (const i of indexes) {
          out.offsets[i] = Number(next)
          next += 1n
        }
      }))
    }
  } finally {
    await producer.disconnect()
  }
  fs.writeFileSync(outPath, JSON.stringify(out))
}

main().catch(e => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(1)
})
