def load_users(path):
    users = []
    with open(path) as f:
        for line in f:
            name, age, city = line.strip().split(",")
            users.append({"name": name, "age": int(age), "city": city})
    return users


def oldest(users):
    best = None
    for u in users:
        if best is None or u["age"] > best["age"]:
            best = u
    return best
