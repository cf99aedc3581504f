// Command franz drives a broker with franz-go (a client known for strict protocol checks) for
// chronik-trio's tests: admin calls through kadm, an idempotent acks=all producer, and a
// consumer in a group that commits. Each step prints one JSON line on stdout ({"step": ...});
// a failed step prints {"step": ..., "error": ...} and the program exits 1.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func emit(step string, fields map[string]any) {
	fields["step"] = step
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

func fail(step string, err error) {
	emit(step, map[string]any{"error": err.Error()})
	os.Exit(1)
}

func main() {
	bootstrap := flag.String("bootstrap", "127.0.0.1:9092", "comma-separated seed brokers")
	topic := flag.String("topic", "franz", "topic to create, produce to, consume and delete")
	group := flag.String("group", "franz-group", "consumer group")
	records := flag.Int("records", 1000, "records to produce and consume")
	partitions := flag.Int("partitions", 3, "partitions of the topic")
	rf := flag.Int("rf", 1, "replication factor of the topic")
	timeout := flag.Duration("timeout", 90*time.Second, "bound on the whole run")
	fetchMaxBytes := flag.Int("fetch-max-bytes", 50<<20, "consumer: bytes per fetch response")
	partitionMaxBytes := flag.Int("fetch-max-partition-bytes", 1<<20, "consumer: bytes per partition of a fetch")
	readOnly := flag.Int("read-only", 0, "if > 0: only read the existing topic's partitions from offset 0 until "+
		"this many records are read (chronik-trio bench's consume mode), print the rate, and exit")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	seeds := kgo.SeedBrokers(splitComma(*bootstrap)...)
	limits := []kgo.Opt{kgo.FetchMaxBytes(int32(*fetchMaxBytes)), kgo.FetchMaxPartitionBytes(int32(*partitionMaxBytes))}
	if *readOnly > 0 {
		readAll(ctx, seeds, *topic, *partitions, *readOnly, limits...)
		return
	}

	admin, err := kgo.NewClient(seeds)
	if err != nil {
		fail("client", err)
	}
	defer admin.Close()
	adm := kadm.NewClient(admin)
	runAdmin(ctx, adm, *topic, int32(*partitions), int16(*rf))
	told := produce(ctx, seeds, *topic, *records)
	consume(ctx, seeds, *topic, *group, told, limits...)
	groupAdmin(ctx, adm, *group, *topic)

	deleted, err := adm.DeleteTopics(ctx, *topic)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		fail("delete", err)
	}
	emit("delete", map[string]any{"topic": *topic})
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return out
}

func runAdmin(ctx context.Context, adm *kadm.Client, topic string, partitions int32, rf int16) {
	created, err := adm.CreateTopic(ctx, partitions, rf, nil, topic)
	if err == nil {
		err = created.Err
	}
	if err != nil {
		fail("create", err)
	}
	emit("create", map[string]any{"topic": topic, "topic_id": created.ID.String()})

	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		fail("brokers", err)
	}
	emit("brokers", map[string]any{"ids": brokers.NodeIDs()})

	details, err := adm.ListTopics(ctx, topic)
	if err == nil {
		err = details.Error()
	}
	if err != nil {
		fail("describe", err)
	}
	var parts []map[string]any
	for _, p := range details[topic].Partitions.Sorted() {
		parts = append(parts, map[string]any{"partition": p.Partition, "leader": p.Leader,
			"replicas": p.Replicas, "isr": p.ISR})
	}
	emit("describe", map[string]any{"partitions": parts})

	configs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		fail("configs", err)
	}
	rc, err := configs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		fail("configs", err)
	}
	values := map[string]string{}
	for _, c := range rc.Configs {
		values[c.Key] = c.MaybeValue()
	}
	emit("configs", map[string]any{"configs": values})
}

// produce sends n records synchronously in batches; returns value -> "partition/offset".
func produce(ctx context.Context, seeds kgo.Opt, topic string, n int) map[string]string {
	cl, err := kgo.NewClient(seeds, kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		fail("produce", err)
	}
	defer cl.Close()
	told := map[string]string{}
	const batch = 100
	for start := 0; start < n; start += batch {
		var recs []*kgo.Record
		for i := start; i < n && i < start+batch; i++ {
			recs = append(recs, &kgo.Record{Key: []byte("k" + strconv.Itoa(i)), Value: []byte("franz-" + strconv.Itoa(i))})
		}
		results := cl.ProduceSync(ctx, recs...)
		if err := results.FirstErr(); err != nil {
			fail("produce", err)
		}
		for _, r := range results {
			told[string(r.Record.Value)] = fmt.Sprintf("%d/%d", r.Record.Partition, r.Record.Offset)
		}
	}
	emit("produce", map[string]any{"produced": len(told)})
	return told
}

// consume reads in a group until every record told was seen, committing as it goes.
func consume(ctx context.Context, seeds kgo.Opt, topic, group string, told map[string]string, limits ...kgo.Opt) {
	opts := append([]kgo.Opt{seeds, kgo.ConsumeTopics(topic), kgo.ConsumerGroup(group),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()}, limits...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("consume", err)
	}
	seen := map[string]string{}
	duplicates, outOfOrder := 0, 0
	last := map[int32]int64{} // partition -> offset of the last record read
	for len(seen) < len(told) && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if errs := fetches.Errors(); len(errs) > 0 && ctx.Err() == nil {
			fail("consume", fmt.Errorf("%s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if _, ok := seen[string(r.Value)]; ok {
				duplicates++
			}
			seen[string(r.Value)] = fmt.Sprintf("%d/%d", r.Partition, r.Offset)
			if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
				outOfOrder++
			}
			last[r.Partition] = r.Offset
		})
		if err := cl.CommitUncommittedOffsets(ctx); err != nil {
			fail("commit", err)
		}
	}
	mismatched := 0
	for v, where := range told {
		if seen[v] != where {
			mismatched++
		}
	}
	cl.Close() // leaves the group
	emit("consume", map[string]any{"consumed": len(seen), "duplicates": duplicates, "mismatched": mismatched,
		"out_of_order": outOfOrder})
}

// readAll reads partitions 0..partitions-1 of topic from offset 0 (assigned, no group) until
// at least expected records were read; emits records, value bytes and seconds from the
// client's creation to the last record.
func readAll(ctx context.Context, seeds kgo.Opt, topic string, partitions, expected int, limits ...kgo.Opt) {
	offsets := map[int32]kgo.Offset{}
	for p := 0; p < partitions; p++ {
		offsets[int32(p)] = kgo.NewOffset().At(0)
	}
	start := time.Now()
	opts := append([]kgo.Opt{seeds, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets})}, limits...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		fail("read", err)
	}
	defer cl.Close()
	records, valueBytes := 0, 0
	last := start
	for records < expected && ctx.Err() == nil {
		fetches := cl.PollFetches(ctx)
		if errs := fetches.Errors(); len(errs) > 0 && ctx.Err() == nil {
			fail("read", fmt.Errorf("%s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err))
		}
		fetches.EachRecord(func(r *kgo.Record) {
			records++
			valueBytes += len(r.Value)
		})
		last = time.Now()
	}
	if records < expected {
		fail("read", fmt.Errorf("read %d of %d records: %w", records, expected, ctx.Err()))
	}
	emit("read", map[string]any{"records": records, "value_bytes": valueBytes,
		"elapsed_s": last.Sub(start).Seconds()})
}

func groupAdmin(ctx context.Context, adm *kadm.Client, group, topic string) {
	listed, err := adm.ListGroups(ctx)
	if err != nil {
		fail("groups", err)
	}
	emit("groups", map[string]any{"groups": listed.Groups()})

	described, err := adm.DescribeGroups(ctx, group)
	if err == nil {
		err = described.Error()
	}
	if err != nil {
		fail("describe-group", err)
	}
	d := described[group]
	emit("describe-group", map[string]any{"state": d.State, "protocol_type": d.ProtocolType,
		"members": len(d.Members), "coordinator": d.Coordinator.NodeID})

	offsets, err := adm.FetchOffsets(ctx, group)
	if err == nil {
		err = offsets.Error()
	}
	if err != nil {
		fail("group-offsets", err)
	}
	committed := map[string]int64{}
	for _, o := range offsets.Sorted() {
		if o.Topic == topic {
			committed[strconv.Itoa(int(o.Partition))] = o.At
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		fail("end-offsets", err)
	}
	endAt := map[string]int64{}
	ends.Each(func(o kadm.ListedOffset) { endAt[strconv.Itoa(int(o.Partition))] = o.Offset })
	emit("group-offsets", map[string]any{"committed": committed, "ends": endAt})

	deleted, err := adm.DeleteGroups(ctx, group)
	if err == nil {
		err = deleted.Error()
	}
	if err != nil {
		fail("delete-group", err)
	}
	emit("delete-group", map[string]any{"group": group})
}
