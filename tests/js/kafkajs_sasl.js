'use strict'
// kafkajs 2.2.4 over SASL_SSL for tests/security/test_sasl.py.
//
// usage: node kafkajs_sasl.js SPEC.json OUT.json
// SPEC: { broker: "127.0.0.1:PORT", ca: PATH, mechanism: "scram-sha-256"|"scram-sha-512"|"plain",
//         username, password, topic, value }
// OUT:  { produced: [{partition, baseOffset}] | null, offsets: [{partition, high}] | null,
//         error: {name, type, message} | null }

const fs = require('fs')
const { Kafka, logLevel } = require('kafkajs')

async function main () {
  const [specPath, outPath] = process.argv.slice(2)
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'))
  const kafka = new Kafka({
    clientId: 'chronik-trio-kafkajs-sasl-test',
    brokers: [spec.broker],
    ssl: { ca: [fs.readFileSync(spec.ca, 'utf8')], servername: 'localhost' },
    sasl: { mechanism: spec.mechanism, username: spec.username, password: spec.password },
    logLevel: logLevel.NOTHING,
    connectionTimeout: 5000,
    requestTimeout: 30000,
    retry: { retries: 2, initialRetryTime: 200, maxRetryTime: 1000 }
  })
  const out = { produced: null, offsets: null, error: null }
  const producer = kafka.producer({ allowAutoTopicCreation: true })
  try {
    await producer.connect()
    const sent = await producer.send({ topic: spec.topic, acks: -1, messages: [{ value: spec.value }] })
    out.produced = sent.map(r => ({ partition: r.partition, baseOffset: r.baseOffset }))
    const admin = kafka.admin()
    await admin.connect()
    out.offsets = (await admin.fetchTopicOffsets(spec.topic)).map(o => ({ partition: o.partition, high: o.high }))
    await admin.disconnect()
  } catch (e) {
    out.error = { name: e.name, type: e.type || null, message: String(e.message) }
  } finally {
    await producer.disconnect().catch(() => {})
  }
  fs.writeFileSync(outPath, JSON.stringify(out))
}

main().catch(e => { console.error(e); process.exit(1) })
