'use strict'
// kafkajs 2.2.4 driver for tests/integration/test_clients.py and tests/replication.
//
// usage: node kafkajs_client.js SPEC.json OUT.json
//
// SPEC: { brokers: ["127.0.0.1:PORT"], chunk: N,
//         create: [{topic, partitions, replicationFactor?}],   (admin createTopics; RF default 1)
//         produce: [{topic, codec: none|gzip|snappy, acks: -1|1|0, idempotent: bool,
//                    records: [{p, k, v, h: [[key, b64]...], t}]}],  (k, v: base64 or null)
//         offsetsByTimestamp: [{topic, ts}] }
// OUT:  { created, produced: {topic: [offset|null per record]}, metadata,
//         topicOffsets: {topic: [{partition, low, high}]}, offsetsByTimestamp: [...] }
//
// kafkajs has no consumer without a consumer group, and the broker has no groups yet, so
// this script only produces and asks for metadata and offsets; the Python test reads the
// records back with another client. The offsets the producer was told come from the
// Produce responses: a send() answers with one baseOffset per partition, and kafkajs puts
// a partition's messages of one send() into one batch in the order given.

const fs = require('fs')
const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs')
const SnappyCodec = require('kafkajs-snappy')

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec
const CODECS = { none: CompressionTypes.None, gzip: CompressionTypes.GZIP, snappy: CompressionTypes.Snappy }

const fromB64 = x => (x === null ? null : Buffer.from(x, 'base64'))

// [[k, v], [k, v2], ...] -> {k: [v, v2]}; repeated keys are adjacent in the test data.
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
    clientId: 'chronik-trio-kafkajs-test',
    brokers: spec.brokers,
    logLevel: logLevel.ERROR,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 5, initialRetryTime: 200, maxRetryTime: 3000 }
  })
  const out = { created: null, produced: {}, metadata: null, topicOffsets: {}, offsetsByTimestamp: [] }
  const admin = kafka.admin()
  await admin.connect()
  try {
    if (spec.create.length) {
      out.created = await admin.createTopics({
        topics: spec.create.map(t => ({ topic: t.topic, numPartitions: t.partitions, replicationFactor: t.replicationFactor || 1 })),
        waitForLeaders: true,
        timeout: 30000
      })
    }
    // One plain producer and, if a job asks for it, one idempotent producer (InitProducerId,
    // sequenced batches; kafkajs then allows one request in flight).
    const producers = {}
    const producerFor = async idempotent => {
      const key = idempotent ? 'idempotent' : 'plain'
      if (!producers[key]) {
        producers[key] = kafka.producer({
          allowAutoTopicCreation: true, idempotent, ...(idempotent ? { maxInFlightRequests: 1 } : {})
        })
        await producers[key].connect()
      }
      return producers[key]
    }
    try {
      for (const job of spec.produce) {
        const producer = await producerFor(Boolean(job.idempotent))
        const offsets = new Array(job.records.length).fill(null)
        for (let start = 0; start < job.records.length; start += spec.chunk) {
          const chunk = job.records.slice(start, start + spec.chunk)
          const res = await producer.send({
            topic: job.topic,
            acks: job.acks,
            compression: CODECS[job.codec],
            timeout: 30000,
            messages: chunk.map(r => ({
              partition: r.p, key: fromB64(r.k), value: fromB64(r.v), headers: toHeaders(r.h), timestamp: String(r.t)
            }))
          })
          if (job.acks === 0) continue
          const next = {}
          for (const m of res) {
            if (m.errorCode !== 0) throw new Error(`produce ${job.topic}/${m.partition}: error ${m.errorCode}`)
            next[m.partition] = BigInt(m.baseOffset)
          }
          chunk.forEach((r, i) => {
            if (!(r.p in next)) throw new Error(`no produce result for ${job.topic}/${r.p}`)
            offsets[start + i] = Number(next[r.p])
            next[r.p] += 1n
          })
        }
        out.produced[job.topic] = offsets
      }
    } finally {
      for (const p of Object.values(producers)) await p.disconnect()
    }
    const topics = [...new Set([...spec.create.map(t => t.topic), ...spec.produce.map(j => j.topic)])]
    out.metadata = await admin.fetchTopicMetadata({ topics })
    for (const t of topics) {
      out.topicOffsets[t] = (await admin.fetchTopicOffsets(t)).map(o => ({
        partition: o.partition, low: Number(o.low), high: Number(o.high)
      }))
    }
    for (const q of spec.offsetsByTimestamp || []) {
      const res = await admin.fetchTopicOffsetsByTimestamp(q.topic, q.ts)
      out.offsetsByTimestamp.push({ topic: q.topic, ts: q.ts, offsets: res.map(o => ({ partition: o.partition, offset: Number(o.offset) })) })
    }
  } finally {
    await admin.disconnect()
  }
  fs.writeFileSync(outPath, JSON.stringify(out))
}

main().catch(e => {
  console.error(e && e.stack ? e.stack : e)
  process.exit(1)
})
