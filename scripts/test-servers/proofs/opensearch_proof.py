import json, requests
B = "http://127.0.0.1:9200"
lines = []
for i, title in enumerate(["first doc", "second doc", "third doc"], 1):
    lines += [json.dumps({"index": {"_index": "ixp-proof", "_id": str(i)}}), json.dumps({"title": title, "n": i})]
r = requests.post(B + "/_bulk", data="\n".join(lines) + "\n", headers={"Content-Type": "application/x-ndjson"})
b = r.json(); print("_bulk:", r.status_code, "errors =", b["errors"], [(list(it)[0], it[list(it)[0]]["status"], it[list(it)[0]]["result"]) for it in b["items"]])
print("_count:", requests.get(B + "/ixp-proof/_count").json()["count"])
s = requests.post(B + "/ixp-proof/_search", json={"query": {"match": {"title": "third"}}}).json()
print("_search title:third:", s["hits"]["total"], [h["_source"] for h in s["hits"]["hits"]])
s = requests.post(B + "/ixp-proof/_search", json={"query": {"match_all": {}}, "size": 10}).json()
print("_search match_all:", s["hits"]["total"]["value"], sorted(h["_id"] for h in s["hits"]["hits"]))
print("DELETE index:", requests.delete(B + "/ixp-proof").json())
