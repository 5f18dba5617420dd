import sys, pymongo
port = int(sys.argv[1]) if len(sys.argv) > 1 else 27017
c = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/?directConnection=true", serverSelectionTimeoutMS=5000)
print("ping:", c.admin.command("ping"))
h = c.admin.command("hello"); print("hello:", h)
print("isMaster:", c.admin.command("isMaster").get("ismaster"))
print("buildInfo version:", c.admin.command("buildInfo").get("version"))
db = c["ixp_test"]; col = db["items"]
col.drop()
r = col.insert_one({"name": "alpha", "n": 1}); print("inserted:", r.inserted_id)
col.insert_many([{"name": "beta", "n": 2}, {"name": "gamma", "n": 3}])
print("find_one:", col.find_one({"name": "alpha"}))
print("find n>=2:", list(col.find({"n": {"$gte": 2}}, {"_id": 0}).sort("n", 1)))
print("count:", col.count_documents({}))
col.update_one({"name": "alpha"}, {"$set": {"n": 10}}); print("after update:", col.find_one({"name":"alpha"},{"_id":0}))
col.delete_one({"name": "beta"}); print("count after delete:", col.count_documents({}))
print("list dbs:", c.list_database_names())
