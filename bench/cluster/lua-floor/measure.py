# usage: redis-server --port 7391 --save "" --appendonly no &; python3 measure.py 7391 lean.lua 176 lua|plain
import time, sys
from resp import enc, R, redis_cpu
port=int(sys.argv[1]); script=open(sys.argv[2]).read(); N=int(sys.argv[3]) if len(sys.argv)>3 else 176
cpu=redis_cpu(port)
r=R(port)
sha=r.cmd('SCRIPT','LOAD',script).decode()
# setup: 100 rooms of 2 sessions, owners n1 and n2
for i in range(100):
    a='sa%d'%i; b='sb%d'%i; room='room%d'%i
    r.cmd('RPUSH','P:r:'+room,a,b)
    r.cmd('HSET','P:ri:'+room,'p:'+a,'peera%d'%i,'p:'+b,'peerb%d'%i)
    r.cmd('HSET','P:s:'+a,'owner','n1','epoch','1','seq','0','bytes','0','n','0')
    r.cmd('HSET','P:s:'+b,'owner','n2','epoch','1','seq','0','bytes','0','n','0')
body='x'*300
r.cmd('CONFIG','RESETSTAT')
seqs={}
t0=time.time(); c0=cpu(); batches=300
mode=sys.argv[4] if len(sys.argv)>4 else 'lua'
for bi in range(batches):
    if mode=='lua':
        args=['EVALSHA',sha,'0','P','n1']
        for k in range(N):
            i=(bi*N+k)%100
            s='sb%d'%i; seqs[s]=seqs.get(s,0)+1
            args += ['room%d'%i,'peera%d'%i, body, s, '1', str(seqs[s])]
        r.cmd(*args)
    else:
        buf=[]
        for k in range(N):
            i=(bi*N+k)%100
            s='sb%d'%i; seqs[s]=seqs.get(s,0)+1
            buf.append(enc(['PUBLISH','P:node:n2',body]))
            buf.append(enc(['RPUSH','P:f:'+s,str(seqs[s])+':'+body]))
            buf.append(enc(['HSET','P:s:'+s,'seq',str(seqs[s])]))
        r.s.sendall(b''.join(buf))
        for _ in range(len(buf)): r.read()
print(sys.argv[2], mode, 'redis cpu us/msg', (cpu()-c0)*1e6/(batches*N))
st=r.cmd('INFO','commandstats').decode()
for line in st.splitlines():
    if 'evalsha' in line:
        us=int(line.split('usec=')[1].split(',')[0]); print(sys.argv[2], 'us/msg', us/(batches*N))
