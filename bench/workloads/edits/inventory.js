class Inventory {
  constructor() {
    this.items = new Map();
  }

  add(name, count) {
    const current = this.items.get(name) || 0;
    this.items.set(name, current + count);
  }

  remove(name, count) {
    const current = this.items.get(name) || 0;
    if (count > current) {
      throw new Error("not enough " + name);
    }
    this.items.set(name, current - count);
  }

  total() {
    let sum = 0;
    for (const count of this.items.values()) {
      sum += count;
    }
    return sum;
  }
}
